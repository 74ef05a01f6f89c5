//! Parsing one command line (without its CRLF) into a command.
//!
//! The rules are beanstalkd's, byte for byte (see `beanstalkd-notes.md` §1):
//!
//! * A NUL byte anywhere gives `BAD_FORMAT`, before anything else. So does a
//!   stray `\r`: beanstalkd never ends a line at a `\r` not followed by `\n`,
//!   so such a line can only ever end in `BAD_FORMAT` there (after it piles up
//!   to the line limit); we answer it at once.
//! * The verb is recognised by **prefix**, in beanstalkd's order (`verb`).
//!   Argument-less verbs then require the line to be exactly the verb;
//!   `quit` accepts anything after it.
//! * Numbers (`number_u32`, `number_u64`): spaces (only) are skipped, a
//!   decimal digit must follow, overflow is an error, and the last argument
//!   must end the line. `kick` uses C `strtoul` instead (`kick_bound`) and
//!   `reserve-with-timeout` does not check what follows its number.
//! * `use`, `watch`, `ignore` and `stats-tube` take the whole rest of the line
//!   as the tube name; `pause-tube` skips spaces and takes the run of name bytes.

use super::command::{is_name_byte, Command, JobId, TubeName};
use super::Reply;
use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::{digit1, one_of};
use nom::combinator::{all_consuming, map_opt, opt};
use nom::sequence::{pair, preceded, tuple};
use nom::IResult;

/// Result of parsing one line (CRLF already stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Command(Command),
    /// A `put` line whose four numbers parsed; the codec reads the body.
    /// `trailing_text` is set when anything follows `bytes` (the codec checks
    /// the size limit first, as beanstalkd does).
    PutHeader {
        pri: u32,
        delay: u32,
        ttr: u32,
        bytes: u32,
        trailing_text: bool,
    },
    /// `BAD_FORMAT` or `UNKNOWN_COMMAND`.
    Error(Reply),
}

/// Parses one command line, without its CRLF.
pub fn parse_line(line: &[u8]) -> Parsed {
    if memchr::memchr2(0, b'\r', line).is_some() {
        return Parsed::Error(Reply::BadFormat);
    }
    let Some((rest, verb)) = verb(line) else {
        return Parsed::Error(Reply::UnknownCommand);
    };
    let parsed = match verb {
        Verb::Put => put(rest),
        Verb::Peek => last(number_u64, rest).map(|id| Parsed::Command(Command::Peek(id))),
        Verb::PeekReady => exact(rest, Command::PeekReady),
        Verb::PeekDelayed => exact(rest, Command::PeekDelayed),
        Verb::PeekBuried => exact(rest, Command::PeekBuried),
        Verb::ReserveWithTimeout => reserve_timeout(rest)
            .ok()
            .map(|(_, s)| Parsed::Command(Command::ReserveWithTimeout(s))),
        Verb::ReserveJob => job_command(rest, Command::ReserveJob),
        Verb::Reserve => exact(rest, Command::Reserve),
        Verb::Delete => job_command(rest, Command::Delete),
        Verb::Release => last(tuple((number_u64, number_u32, number_u32)), rest)
            .map(|(id, pri, delay)| Parsed::Command(Command::Release { id, pri, delay })),
        Verb::Bury => last(pair(number_u64, number_u32), rest)
            .map(|(id, pri)| Parsed::Command(Command::Bury { id, pri })),
        Verb::Kick => kick_bound(rest)
            .ok()
            .map(|(_, n)| Parsed::Command(Command::Kick(n))),
        Verb::KickJob => job_command(rest, Command::KickJob),
        Verb::Touch => job_command(rest, Command::Touch),
        Verb::StatsJob => job_command(rest, Command::StatsJob),
        Verb::StatsTube => tube_command(rest, Command::StatsTube),
        Verb::Stats => exact(rest, Command::Stats),
        Verb::Use => tube_command(rest, Command::Use),
        Verb::Watch => tube_command(rest, Command::Watch),
        Verb::Ignore => tube_command(rest, Command::Ignore),
        Verb::ListTubesWatched => exact(rest, Command::ListTubesWatched),
        Verb::ListTubeUsed => exact(rest, Command::ListTubeUsed),
        Verb::ListTubes => exact(rest, Command::ListTubes),
        Verb::Quit => Some(Parsed::Command(Command::Quit)),
        Verb::PauseTube => pause_tube(rest),
    };
    parsed.unwrap_or(Parsed::Error(Reply::BadFormat))
}

/// The command words (see [`VERBS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Put,
    Peek,
    PeekReady,
    PeekDelayed,
    PeekBuried,
    ReserveWithTimeout,
    ReserveJob,
    Reserve,
    Delete,
    Release,
    Bury,
    Kick,
    KickJob,
    Touch,
    StatsJob,
    StatsTube,
    Stats,
    Use,
    Watch,
    Ignore,
    ListTubesWatched,
    ListTubeUsed,
    ListTubes,
    Quit,
    PauseTube,
}

/// The command words, in the order beanstalkd tries them: the first that
/// prefixes the line wins. Words with a trailing space need it: `put` alone
/// is unknown.
const VERBS: [(&[u8], Verb); 25] = [
    (b"put ", Verb::Put),
    (b"peek ", Verb::Peek),
    (b"peek-ready", Verb::PeekReady),
    (b"peek-delayed", Verb::PeekDelayed),
    (b"peek-buried", Verb::PeekBuried),
    (b"reserve-with-timeout ", Verb::ReserveWithTimeout),
    (b"reserve-job ", Verb::ReserveJob),
    (b"reserve", Verb::Reserve),
    (b"delete ", Verb::Delete),
    (b"release ", Verb::Release),
    (b"bury ", Verb::Bury),
    (b"kick ", Verb::Kick),
    (b"kick-job ", Verb::KickJob),
    (b"touch ", Verb::Touch),
    (b"stats-job ", Verb::StatsJob),
    (b"stats-tube ", Verb::StatsTube),
    (b"stats", Verb::Stats),
    (b"use ", Verb::Use),
    (b"watch ", Verb::Watch),
    (b"ignore ", Verb::Ignore),
    (b"list-tubes-watched", Verb::ListTubesWatched),
    (b"list-tube-used", Verb::ListTubeUsed),
    (b"list-tubes", Verb::ListTubes),
    (b"quit", Verb::Quit),
    (b"pause-tube", Verb::PauseTube),
];

/// The verb of `line` and what follows it. A plain ordered scan, cheap
/// because most words are ruled out by their first byte; it runs for every
/// command, and the `nom` combinators it replaced cost about 300
/// instructions per line.
fn verb(line: &[u8]) -> Option<(&[u8], Verb)> {
    let first = *line.first()?;
    VERBS
        .iter()
        .find(|(word, _)| word[0] == first && line.starts_with(word))
        .map(|&(word, verb)| (&line[word.len()..], verb))
}

/// Zero or more ASCII spaces (tabs are not skipped).
fn spaces(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while(|b| b == b' ')(i)
}

/// Decimal digits to a value, `None` on overflow. Leading zeros are fine.
fn decimal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// beanstalkd's `read_u64`: spaces, then at least one digit, no sign, no overflow.
fn number_u64(i: &[u8]) -> IResult<&[u8], u64> {
    map_opt(preceded(spaces, digit1), decimal)(i)
}

/// beanstalkd's `read_u32`: as `number_u64`, and the value must fit in 32 bits.
fn number_u32(i: &[u8]) -> IResult<&[u8], u32> {
    map_opt(number_u64, |n| u32::try_from(n).ok())(i)
}

/// `reserve-with-timeout` (1.13): a `read_u32` whose trailing text is not
/// checked; the value must also fit in a C `int`.
fn reserve_timeout(i: &[u8]) -> IResult<&[u8], u32> {
    map_opt(number_u32, |n| (n <= i32::MAX as u32).then_some(n))(i)
}

/// Bytes C's `isspace` accepts in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `kick`'s bound, read with C `strtoul(.., 10)` on a 64-bit `unsigned long`
/// and stored in a 32-bit `unsigned int`: leading white space, an optional
/// sign, at least one digit; trailing text is ignored. A negative value wraps
/// (`-1` is `ULONG_MAX`); a magnitude over `ULONG_MAX` is `ERANGE`, which
/// beanstalkd answers with `BAD_FORMAT`.
fn kick_bound(i: &[u8]) -> IResult<&[u8], u32> {
    map_opt(
        preceded(take_while(is_c_space), pair(opt(one_of("+-")), digit1)),
        |(sign, digits): (Option<char>, &[u8])| {
            let n = decimal(digits)?;
            let n = if sign == Some('-') {
                n.wrapping_neg()
            } else {
                n
            };
            Some(n as u32)
        },
    )(i)
}

/// `pause-tube`'s arguments: spaces, a run of name bytes (at least one), then
/// the delay as the last argument. The name is not validated here.
fn pause_args(i: &[u8]) -> IResult<&[u8], (&[u8], u32)> {
    pair(preceded(spaces, take_while1(is_name_byte)), number_u32)(i)
}

/// Runs `p` over the whole of `i`: the last argument must end the line.
fn last<'a, O>(p: impl FnMut(&'a [u8]) -> IResult<&'a [u8], O>, i: &'a [u8]) -> Option<O> {
    all_consuming(p)(i).ok().map(|(_, o)| o)
}

/// An argument-less command: the line must be exactly the verb.
fn exact(rest: &[u8], cmd: Command) -> Option<Parsed> {
    rest.is_empty().then_some(Parsed::Command(cmd))
}

/// A command whose only argument is a job id.
fn job_command(rest: &[u8], make: fn(JobId) -> Command) -> Option<Parsed> {
    last(number_u64, rest).map(|id| Parsed::Command(make(id)))
}

/// A command whose argument is the whole rest of the line, as a tube name.
fn tube_command(rest: &[u8], make: fn(TubeName) -> Command) -> Option<Parsed> {
    TubeName::new(rest).map(|t| Parsed::Command(make(t)))
}

fn put(rest: &[u8]) -> Option<Parsed> {
    let (tail, (pri, delay, ttr, bytes)) =
        tuple((number_u32, number_u32, number_u32, number_u32))(rest).ok()?;
    Some(Parsed::PutHeader {
        pri,
        delay,
        ttr,
        bytes,
        trailing_text: !tail.is_empty(),
    })
}

fn pause_tube(rest: &[u8]) -> Option<Parsed> {
    let (name, delay) = last(pause_args, rest)?;
    Some(Parsed::Command(match TubeName::new(name) {
        Some(tube) => Command::PauseTube { tube, delay },
        None => Command::PauseTubeBadName,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(c: Command) -> Parsed {
        Parsed::Command(c)
    }
    fn tube(s: &str) -> TubeName {
        TubeName::new(s.as_bytes()).unwrap()
    }
    const BAD: Parsed = Parsed::Error(Reply::BadFormat);
    const UNKNOWN: Parsed = Parsed::Error(Reply::UnknownCommand);

    fn check(cases: &[(&[u8], Parsed)]) {
        for (line, want) in cases {
            assert_eq!(
                parse_line(line),
                *want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    fn header(pri: u32, delay: u32, ttr: u32, bytes: u32, trailing_text: bool) -> Parsed {
        Parsed::PutHeader {
            pri,
            delay,
            ttr,
            bytes,
            trailing_text,
        }
    }

    #[test]
    fn every_verb() {
        check(&[
            (b"put 1 2 3 4", header(1, 2, 3, 4, false)),
            (b"use foo", cmd(Command::Use(tube("foo")))),
            (b"reserve", cmd(Command::Reserve)),
            (
                b"reserve-with-timeout 5",
                cmd(Command::ReserveWithTimeout(5)),
            ),
            (b"reserve-job 7", cmd(Command::ReserveJob(7))),
            (b"delete 8", cmd(Command::Delete(8))),
            (
                b"release 9 10 11",
                cmd(Command::Release {
                    id: 9,
                    pri: 10,
                    delay: 11,
                }),
            ),
            (b"bury 12 13", cmd(Command::Bury { id: 12, pri: 13 })),
            (b"touch 14", cmd(Command::Touch(14))),
            (b"watch bar", cmd(Command::Watch(tube("bar")))),
            (b"ignore baz", cmd(Command::Ignore(tube("baz")))),
            (b"peek 15", cmd(Command::Peek(15))),
            (b"peek-ready", cmd(Command::PeekReady)),
            (b"peek-delayed", cmd(Command::PeekDelayed)),
            (b"peek-buried", cmd(Command::PeekBuried)),
            (b"kick 16", cmd(Command::Kick(16))),
            (b"kick-job 17", cmd(Command::KickJob(17))),
            (b"stats-job 18", cmd(Command::StatsJob(18))),
            (b"stats-tube qux", cmd(Command::StatsTube(tube("qux")))),
            (b"stats", cmd(Command::Stats)),
            (b"list-tubes", cmd(Command::ListTubes)),
            (b"list-tube-used", cmd(Command::ListTubeUsed)),
            (b"list-tubes-watched", cmd(Command::ListTubesWatched)),
            (
                b"pause-tube default 19",
                cmd(Command::PauseTube {
                    tube: tube("default"),
                    delay: 19,
                }),
            ),
            (b"quit", cmd(Command::Quit)),
        ]);
    }

    #[test]
    fn unknown_commands() {
        check(&[
            (b"", UNKNOWN),
            (b" ", UNKNOWN),
            (b"PUT 0 0 1 1", UNKNOWN),
            (b"Stats", UNKNOWN),
            (b"STATS", UNKNOWN),
            (b"foo", UNKNOWN),
            (b" stats", UNKNOWN),
            // Verbs that need arguments, without the space.
            (b"put", UNKNOWN),
            (b"delete", UNKNOWN),
            (b"use", UNKNOWN),
            (b"touch", UNKNOWN),
            (b"kick", UNKNOWN),
            (b"kick-job", UNKNOWN),
            (b"peek", UNKNOWN),
            (b"peek-", UNKNOWN),
            (b"peekx", UNKNOWN),
            (b"watch", UNKNOWN),
            (b"ignore", UNKNOWN),
            (b"bury", UNKNOWN),
            (b"release", UNKNOWN),
            (b"stat", UNKNOWN),
            (b"list-tube", UNKNOWN),
            (b"qui", UNKNOWN),
            (b"pause-tub", UNKNOWN),
            // A tab is not a space.
            (b"delete\t1", UNKNOWN),
            (b"put\t0 0 1 1", UNKNOWN),
            (b"kick\t1", UNKNOWN),
        ]);
    }

    #[test]
    fn argument_less_commands_must_be_exact() {
        check(&[
            (b"reserve ", BAD),
            (b"reservex", BAD),
            (b"reserve-job", BAD),
            (b"reserve-with-timeout", BAD),
            (b"reserve-foo 1", BAD),
            (b"peek-ready ", BAD),
            (b"peek-readyx", BAD),
            (b"peek-delayed 1", BAD),
            (b"peek-buried\t", BAD),
            (b"stats ", BAD),
            (b"stats-foo", BAD),
            (b"stats-job", BAD),
            (b"stats-tube", BAD),
            (b"list-tubes-foo", BAD),
            (b"list-tubesx", BAD),
            (b"list-tubes ", BAD),
            (b"list-tube-used ", BAD),
            (b"list-tube-usedx", BAD),
            (b"list-tubes-watched ", BAD),
            (b"list-tubes-watchedx", BAD),
        ]);
    }

    #[test]
    fn quit_takes_anything_after_it() {
        check(&[
            (b"quit", cmd(Command::Quit)),
            (b"quit ", cmd(Command::Quit)),
            (b"quitxyz", cmd(Command::Quit)),
            (b"quit 1 2 3", cmd(Command::Quit)),
            (b"quit\x01\xff", cmd(Command::Quit)),
            // ...but the NUL check comes first.
            (b"quit\0", BAD),
        ]);
    }

    #[test]
    fn nul_and_stray_cr_are_bad_format() {
        check(&[
            (b"\0", BAD),
            (b"stats\0", BAD),
            (b"\0stats", BAD),
            (b"xyz\0", BAD),
            (b"use a\0b", BAD),
            (b"put 0 0 1 1\0", BAD),
            (b"use a\rb", BAD),
            (b"stats\r", BAD),
            (b"\r", BAD),
            (b"kick \r5", BAD),
            (b"reserve-with-timeout 5\r", BAD),
            (b"quit\r", BAD),
            (b"foo\rbar", BAD),
            // A bare LF is an ordinary byte.
            (b"stats\n", BAD),
            (b"\n", UNKNOWN),
        ]);
    }

    #[test]
    fn put_line() {
        check(&[
            (b"put ", BAD),
            (b"put 0 0 1", BAD),
            (b"put 0 0 1 ", BAD),
            (b"put 0 0 10 5", header(0, 0, 10, 5, false)),
            (b"put 01 00 010 01", header(1, 0, 10, 1, false)),
            (b"put  1  0  10  1", header(1, 0, 10, 1, false)),
            (
                b"put 4294967295 4294967295 4294967295 4294967295",
                header(u32::MAX, u32::MAX, u32::MAX, u32::MAX, false),
            ),
            (b"put 4294967296 0 1 1", BAD),
            (b"put 0 4294967296 1 1", BAD),
            (b"put 0 0 4294967296 1", BAD),
            (b"put 0 0 1 4294967296", BAD),
            (b"put 0 0 1 18446744073709551616", BAD),
            (b"put -1 0 10 1", BAD),
            (b"put +1 0 10 1", BAD),
            (b"put 1x 0 1 1", BAD),
            (b"put 1 0 1 x", BAD),
            (b"put 1 0\t1 1", BAD),
            (b"put\x200 0 1 1", header(0, 0, 1, 1, false)),
            // Trailing text is the codec's business (after the size check).
            (b"put 0 0 1 1 ", header(0, 0, 1, 1, true)),
            (b"put 0 0 1 1x", header(0, 0, 1, 1, true)),
            (b"put 0 0 10 11 garbage", header(0, 0, 10, 11, true)),
            (b"put 0 0 1 1 2", header(0, 0, 1, 1, true)),
            (b"put 0 0 1 1\t", header(0, 0, 1, 1, true)),
        ]);
    }

    #[test]
    fn job_ids_are_u64() {
        check(&[
            (b"peek 0", cmd(Command::Peek(0))),
            (b"peek 01", cmd(Command::Peek(1))),
            (
                b"peek 000000000000000000000000000042",
                cmd(Command::Peek(42)),
            ),
            (b"peek  1", cmd(Command::Peek(1))),
            (b"peek     1", cmd(Command::Peek(1))),
            (b"peek 18446744073709551615", cmd(Command::Peek(u64::MAX))),
            (b"peek 18446744073709551616", BAD),
            (b"peek 99999999999999999999999", BAD),
            (b"peek -1", BAD),
            (b"peek +1", BAD),
            (b"peek \t1", BAD),
            (b"peek 1 ", BAD),
            (b"peek 1x", BAD),
            (b"peek 1 2", BAD),
            (b"peek ", BAD),
            (b"peek x", BAD),
            (b"peek 0x10", BAD),
            (
                b"delete 18446744073709551615",
                cmd(Command::Delete(u64::MAX)),
            ),
            (b"delete 18446744073709551616", BAD),
            (b"delete ", BAD),
            (b"delete 1 ", BAD),
            (b"touch 5 ", BAD),
            (b"touch  5", cmd(Command::Touch(5))),
            (b"kick-job 1", cmd(Command::KickJob(1))),
            (b"kick-job 1x", BAD),
            (b"kick-job -1", BAD),
            (b"kick-job ", BAD),
            (b"stats-job 3 ", BAD),
            (b"stats-job ", BAD),
            (
                b"reserve-job 18446744073709551615",
                cmd(Command::ReserveJob(u64::MAX)),
            ),
            (b"reserve-job 1 ", BAD),
            (b"reserve-job ", BAD),
        ]);
    }

    #[test]
    fn release_and_bury() {
        check(&[
            (
                b"release 1 4294967295 4294967295",
                cmd(Command::Release {
                    id: 1,
                    pri: u32::MAX,
                    delay: u32::MAX,
                }),
            ),
            (
                b"release  18446744073709551615   0   0",
                cmd(Command::Release {
                    id: u64::MAX,
                    pri: 0,
                    delay: 0,
                }),
            ),
            (b"release 1 4294967296 0", BAD),
            (b"release 1 0 4294967296", BAD),
            (b"release 18446744073709551616 0 0", BAD),
            (b"release 1 0", BAD),
            (b"release 1 0 0 ", BAD),
            (b"release 1 0 0 0", BAD),
            (b"release 1 -0 0", BAD),
            (b"release ", BAD),
            (b"bury 1 2", cmd(Command::Bury { id: 1, pri: 2 })),
            (
                b"bury 1 4294967295",
                cmd(Command::Bury {
                    id: 1,
                    pri: u32::MAX,
                }),
            ),
            (b"bury 1 4294967296", BAD),
            (b"bury 1", BAD),
            (b"bury 1 2 ", BAD),
            (b"bury 1x2", BAD),
            (b"bury ", BAD),
        ]);
    }

    #[test]
    fn kick_is_strtoul() {
        let kick = |n| cmd(Command::Kick(n));
        check(&[
            (b"kick 5", kick(5)),
            (b"kick  5", kick(5)),
            (b"kick \t 5", kick(5)),
            (b"kick \x0c5", kick(5)),
            (b"kick \n2", kick(2)),
            (b"kick 1x", kick(1)),
            (b"kick 2 junk", kick(2)),
            (b"kick +1", kick(1)),
            (b"kick -0", kick(0)),
            (b"kick 0x2", kick(0)),
            (b"kick 00000000000000000000000000000002", kick(2)),
            (b"kick -1", kick(u32::MAX)),
            (b"kick -4294967295", kick(1)),
            (b"kick -4294967294", kick(2)),
            (b"kick 4294967295", kick(u32::MAX)),
            (b"kick 4294967296", kick(0)),
            (b"kick 4294967297", kick(1)),
            (b"kick 18446744073709551615", kick(u32::MAX)),
            (b"kick 18446744073709551614", kick(u32::MAX - 1)),
            (b"kick -18446744073709551615", kick(1)),
            // ERANGE
            (b"kick 18446744073709551616", BAD),
            (b"kick 99999999999999999999", BAD),
            (b"kick -18446744073709551616", BAD),
            (b"kick -99999999999999999999", BAD),
            // No digits.
            (b"kick ", BAD),
            (b"kick -", BAD),
            (b"kick - 2", BAD),
            (b"kick +-1", BAD),
            (b"kick x", BAD),
        ]);
    }

    #[test]
    fn reserve_with_timeout_follows_1_13() {
        let rwt = |n| cmd(Command::ReserveWithTimeout(n));
        check(&[
            (b"reserve-with-timeout 0", rwt(0)),
            (b"reserve-with-timeout 00", rwt(0)),
            (b"reserve-with-timeout  7", rwt(7)),
            (b"reserve-with-timeout 5 junk", rwt(5)),
            (b"reserve-with-timeout 5x", rwt(5)),
            (b"reserve-with-timeout 5 ", rwt(5)),
            (b"reserve-with-timeout 2147483647", rwt(2147483647)),
            (b"reserve-with-timeout 2147483648", BAD),
            (b"reserve-with-timeout 4294967295", BAD),
            (b"reserve-with-timeout 4294967296", BAD),
            (b"reserve-with-timeout 18446744073709551616", BAD),
            (b"reserve-with-timeout -1", BAD),
            (b"reserve-with-timeout +0", BAD),
            (b"reserve-with-timeout abc", BAD),
            (b"reserve-with-timeout ", BAD),
            (b"reserve-with-timeout \t1", BAD),
        ]);
    }

    #[test]
    fn tube_names_take_the_whole_rest() {
        let name200 = [b'a'; 200];
        let name201 = [b'a'; 201];
        let mut use200 = b"use ".to_vec();
        use200.extend_from_slice(&name200);
        let mut use201 = b"use ".to_vec();
        use201.extend_from_slice(&name201);
        let mut stats201 = b"stats-tube ".to_vec();
        stats201.extend_from_slice(&name201);
        let all = "AZaz09-+/;.$_()";
        let mut use_all = b"use ".to_vec();
        use_all.extend_from_slice(all.as_bytes());
        check(&[
            (&use200, cmd(Command::Use(tube(&"a".repeat(200))))),
            (&use201, BAD),
            (&stats201, BAD),
            (&use_all, cmd(Command::Use(tube(all)))),
            (b"use foo bar", BAD),
            (b"use foo ", BAD),
            (b"use  foo", BAD),
            (b"use ", BAD),
            (b"use -foo", BAD),
            (b"use f-oo", cmd(Command::Use(tube("f-oo")))),
            (b"use +", cmd(Command::Use(tube("+")))),
            (b"use foo*", BAD),
            (b"use f\too", BAD),
            (b"use caf\xc3\xa9", BAD),
            (b"use foo\n", BAD),
            (b"watch foo bar", BAD),
            (b"watch ", BAD),
            (b"watch -x", BAD),
            (b"ignore foo ", BAD),
            (b"ignore ", BAD),
            (b"ignore default", cmd(Command::Ignore(tube("default")))),
            (b"stats-tube  default", BAD),
            (b"stats-tube ", BAD),
            (
                b"stats-tube default",
                cmd(Command::StatsTube(tube("default"))),
            ),
        ]);
    }

    #[test]
    fn pause_tube() {
        let pause = |name: &str, delay| {
            cmd(Command::PauseTube {
                tube: tube(name),
                delay,
            })
        };
        let mut long200 = b"pause-tube ".to_vec();
        long200.extend_from_slice(&[b'a'; 200]);
        long200.extend_from_slice(b" 4294967295");
        let mut long201 = b"pause-tube ".to_vec();
        long201.extend_from_slice(&[b'a'; 201]);
        long201.extend_from_slice(b" 1");
        check(&[
            (&long200, pause(&"a".repeat(200), u32::MAX)),
            (&long201, cmd(Command::PauseTubeBadName)),
            (b"pause-tubedefault 1", pause("default", 1)),
            (b"pause-tube  default  1", pause("default", 1)),
            (b"pause-tube default 0", pause("default", 0)),
            (b"pause-tube  5 1", pause("5", 1)),
            (b"pause-tube -x 1", cmd(Command::PauseTubeBadName)),
            (b"pause-tube - 1", cmd(Command::PauseTubeBadName)),
            (b"pause-tube", BAD),
            (b"pause-tube ", BAD),
            (b"pause-tubes", BAD),
            (b"pause-tube default", BAD),
            (b"pause-tube default ", BAD),
            (b"pause-tube default 1 ", BAD),
            (b"pause-tube default x", BAD),
            (b"pause-tube default -1", BAD),
            (b"pause-tube default 4294967296", BAD),
            (b"pause-tube default,1", BAD),
            (b"pause-tube default\t1", BAD),
            (b"pause-tube\tdefault 1", BAD),
            (b"pause-tube def\tault 1", BAD),
            // An empty name: beanstalkd rejects it before reading the delay.
            (b"pause-tube ,default 1", BAD),
            (b"pause-tube  1", BAD),
            (b"pause-tube 1", BAD),
            (b"pause-tube -x", BAD),
        ]);
    }

    #[test]
    fn prefix_order_quirks() {
        check(&[
            // `kick ` does not match `kick-job`.
            (b"kick-job 1", cmd(Command::KickJob(1))),
            (b"kick-jobs 1", UNKNOWN),
            // `peek ` wins over nothing else; `peek-ready` needs the exact line.
            (b"peek-ready", cmd(Command::PeekReady)),
            (b"peek-readyish", BAD),
            // `stats-job ` and `stats-tube ` come before `stats`.
            (b"stats-job 1", cmd(Command::StatsJob(1))),
            (b"stats-jobx 1", BAD),
            (b"stats-tubes", BAD),
            // `reserve-job ` comes before `reserve`.
            (b"reserve-job 1", cmd(Command::ReserveJob(1))),
            (b"reserve-jobs 1", BAD),
            (b"reserve-with-timeout5", BAD),
            // `list-tubes-watched` and `list-tube-used` before `list-tubes`.
            (b"list-tubes-watched", cmd(Command::ListTubesWatched)),
            (b"list-tube-usedx", BAD),
            (b"list-tubes-watche", BAD),
            (b"list-tubes-", BAD),
            // `quit` matches before `pause-tube`, and as a prefix.
            (b"quit-tube default 1", cmd(Command::Quit)),
            (b"putx", UNKNOWN),
            (b"use", UNKNOWN),
            (b"used", UNKNOWN),
        ]);
    }

    #[test]
    fn number_building_blocks() {
        assert_eq!(number_u64(b"  12 rest"), Ok((&b" rest"[..], 12)));
        assert_eq!(number_u64(b"007x"), Ok((&b"x"[..], 7)));
        assert!(number_u64(b"\t1").is_err());
        assert!(number_u64(b"").is_err());
        assert!(number_u64(b"18446744073709551616").is_err());
        assert_eq!(number_u32(b"4294967295"), Ok((&b""[..], u32::MAX)));
        assert!(number_u32(b"4294967296").is_err());
        assert_eq!(kick_bound(b"-1"), Ok((&b""[..], u32::MAX)));
        assert_eq!(verb(b"kick-job 1"), Some((&b"1"[..], Verb::KickJob)));
        assert_eq!(verb(b"pause-tubex"), Some((&b"x"[..], Verb::PauseTube)));
        assert_eq!(
            verb(b"reserve-with-timeout"),
            Some((&b"-with-timeout"[..], Verb::Reserve))
        );
        assert_eq!(verb(b"stats-tube"), Some((&b"-tube"[..], Verb::Stats)));
        assert_eq!(verb(b""), None);
        assert_eq!(verb(b"PUT 0 0 0 0"), None);
    }
}
