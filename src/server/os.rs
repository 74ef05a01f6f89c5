//! The few operating-system calls that std and tokio do not offer: the
//! file-descriptor limit, `IPV6_V6ONLY`, user lookup and privilege drop,
//! systemd socket activation, and glibc's heap trimming.
//!
//! All of the daemon's `unsafe` lives here, but for the binlog's memory
//! mapping (`binlog/mapped.rs`). Each block is a plain libc call on memory
//! we own, and says why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so the number of
/// clients is bounded by what the administrator allows, not by the often
/// small default soft limit (1024). Returns the soft limit before and after.
pub fn raise_nofile_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur >= lim.rlim_max {
        return Ok((before, before));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, lim.rlim_cur))
}

/// Heap memory glibc keeps at the top of the heap before giving it back.
const TRIM_THRESHOLD: libc::c_int = 16 << 20;
/// Allocations at least this big get their own mapping instead of heap memory.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Tunes glibc's malloc for a long-running server, before any thread starts:
///
/// * **Fixed thresholds.** By default glibc trims the heap top once 128 KiB
///   are free and maps anything from 128 KiB up on its own, so a server that
///   receives, stores and deletes 64 KiB bodies shrinks and regrows its heap
///   with `brk` and page-faults the new pages in for every few jobs: 7-14% of
///   its CPU with 64 KiB bodies (perf). With fixed thresholds (16 MiB kept,
///   1 MiB mapped) that memory is reused.
/// * **No fast bins.** tokio aligns each connection's task and I/O
///   registration to 128 bytes, and glibc frees what the alignment skips
///   as small chunks. In fast bins those are never merged back unless a
///   large allocation happens to trigger it, so 5,000 idle connections left
///   109 bytes each of unusable free heap once sessions stopped allocating
///   a read buffer per command (956 against 830 B of RSS per connection).
///   Small frees still go through the per-thread cache first: the server's
///   instructions for 20,000 put/reserve/delete cycles did not change.
///
/// Each is left alone when the administrator set glibc's own knobs for it
/// (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TOP_PAD_`,
/// `MALLOC_MMAP_MAX_`, or the matching `glibc.malloc.*` tunables, among them
/// `glibc.malloc.mxfast`). Returns whether the thresholds were set.
///
/// # Safety
///
/// No other thread may exist yet: glibc's `mallopt` is not thread-safe.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub unsafe fn tune_allocator() -> bool {
    if !set_by_admin(&["MXFAST"]) {
        // SAFETY: mallopt only changes allocator parameters, and the caller
        // guarantees no other thread exists.
        unsafe { libc::mallopt(libc::M_MXFAST, 0) };
    }
    // The knobs of these thresholds (others, such as MALLOC_ARENA_MAX, which
    // containers often set, do not touch them).
    if set_by_admin(&["TRIM_THRESHOLD", "MMAP_THRESHOLD", "TOP_PAD", "MMAP_MAX"]) {
        return false;
    }
    // SAFETY: as above.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

/// Whether the environment sets one of glibc's malloc `knobs`, as a
/// `MALLOC_<KNOB>_` variable or a `glibc.malloc.<knob>` tunable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_by_admin(knobs: &[&str]) -> bool {
    std::env::vars_os().any(|(k, v)| {
        let (k, v) = (k.to_string_lossy(), v.to_string_lossy());
        let tunables = v.to_ascii_lowercase();
        knobs.iter().any(|knob| {
            k == format!("MALLOC_{knob}_")
                || (k == "GLIBC_TUNABLES"
                    && tunables.contains(&format!("glibc.malloc.{}", knob.to_ascii_lowercase())))
        })
    })
}

/// Other C libraries have their own policies; nothing to tune.
///
/// # Safety
///
/// None needed here; `unsafe` only to match the glibc version.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub unsafe fn tune_allocator() -> bool {
    false
}

/// Returns the heap's free pages to the kernel (glibc keeps freed memory
/// inside the heap for reuse, and only trims its top). Returns whether any
/// memory was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: a plain libc call with no pointers; glibc locks its arenas.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other C libraries decide for themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Sets `IPV6_V6ONLY` on an IPv6 socket before it is bound. beanstalkd turns it
/// off so that `-l ::` also accepts IPv4 clients (as `::ffff:a.b.c.d`);
/// tokio's `TcpSocket` has no setter for it.
pub fn set_v6only(socket: &impl AsRawFd, on: bool) -> io::Result<()> {
    let value: libc::c_int = on.into();
    // SAFETY: the fd is a live socket owned by the caller; `value` outlives
    // the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A user from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Looks `name` up with `getpwnam_r` (thread-safe, unlike `getpwnam`: the
/// runtime's threads are already running). `Ok(None)`: no such user.
pub fn lookup_user(name: &str) -> io::Result<Option<User>> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut buf_len = usize::try_from(hint).unwrap_or(1024).clamp(1024, 1 << 16);
    loop {
        let mut buf = vec![0 as libc::c_char; buf_len];
        // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is a C string,
        // `pwd` and `result` are writable, `buf` has `buf_len` bytes. The
        // strings written into `pwd` point into `buf`, which we do not read
        // after it is dropped.
        let r = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf_len,
                &mut result,
            )
        };
        if r == libc::ERANGE && buf_len < 1 << 20 {
            buf_len *= 4;
            continue;
        }
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name points to a C string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Ok(Some(User {
            name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        }));
    }
}

/// Which step of a privilege drop failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropStep {
    /// setgroups
    Groups,
    /// setgid
    Gid,
    /// setuid
    Uid,
}

/// Becomes `user`: supplementary groups cleared (when root), then the
/// primary group, then the user id. The order matters: once the uid is no
/// longer 0, the group can no longer be changed.
///
/// beanstalkd does only setgid+setuid; we also drop root's supplementary
/// groups, which would otherwise stay with the process (a server running as
/// `nobody` but still in group `root` is not what `-u` promises).
///
/// glibc and musl apply set*id to every thread of the process, so calling
/// this with the runtime's worker threads running is fine.
pub fn become_user(user: &User) -> Result<(), (DropStep, io::Error)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let groups = [user.gid];
        // SAFETY: `groups` holds exactly the one gid we pass the length of.
        if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
            return Err((DropStep::Groups, io::Error::last_os_error()));
        }
    }
    // SAFETY: plain system calls on integer arguments.
    if unsafe { libc::setgid(user.gid) } != 0 {
        return Err((DropStep::Gid, io::Error::last_os_error()));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(user.uid) } != 0 {
        return Err((DropStep::Uid, io::Error::last_os_error()));
    }
    Ok(())
}

/// The first socket passed by systemd socket activation, if this process is
/// the one it was meant for (`LISTEN_PID` is our pid and `LISTEN_FDS` >= 1).
/// The fd is marked close-on-exec, which systemd leaves off.
///
/// Must be called at most once: the returned `OwnedFd` owns fd 3.
pub fn systemd_listener() -> Option<(OwnedFd, usize)> {
    const SD_LISTEN_FDS_START: RawFd = 3;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let count: usize = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    if count == 0 {
        return None;
    }
    let fd = SD_LISTEN_FDS_START;
    // SAFETY: F_GETFD on an integer fd has no memory effects; it tells us
    // whether fd 3 is open at all before we take ownership of it.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: as above; setting FD_CLOEXEC only affects exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: systemd's protocol hands fd 3 to this process (LISTEN_PID is
    // ours) and nothing else in the process owns it.
    Some((unsafe { OwnedFd::from_raw_fd(fd) }, count))
}

/// The address family (`AF_INET`, `AF_INET6`, `AF_UNIX`, ...) of a socket.
pub fn socket_family(fd: &impl AsRawFd) -> io::Result<libc::c_int> {
    // SAFETY: an all-zero sockaddr_storage is valid; getsockname writes at
    // most `len` bytes into it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are valid and writable.
    let r = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(addr.ss_family))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_misses_nonsense() {
        let root = lookup_user("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup_user("no-such-user-stalkd").unwrap(), None);
    }

    #[test]
    fn raising_the_limit_is_idempotent() {
        let (_, after) = raise_nofile_limit().unwrap();
        assert_eq!(raise_nofile_limit().unwrap(), (after, after));
    }

    #[test]
    fn family_of_sockets() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_family(&v4).unwrap(), libc::AF_INET);
    }
}
