//! What a daemon asks of the operating system at start, in one place, because it needs
//! `unsafe` calls into libc that std does not wrap.

/// The CPU time of the calling thread, in nanoseconds (0 if the clock cannot be read): the
/// clock [`kp_exchange::meter`] times the parts of the work with, so that a thread waiting
/// for a core on a busy machine does not count as working.
#[allow(unsafe_code)]
pub fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the one struct we pass, which lives on our stack.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Clock ticks per second, the unit of CPU times in `/proc/PID/stat` (100 if unknown).
#[allow(unsafe_code)]
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The CPU time (user and system) this process has used, in seconds.
#[allow(unsafe_code)]
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the one struct we pass, which lives on our stack.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A write past `RLIMIT_FSIZE` (a quota, or a test's simulated full disk) should fail with
/// `EFBIG` and be reported like any full disk, not kill the process with `SIGXFSZ`.
#[allow(unsafe_code)]
pub fn ignore_file_size_signal() {
    // SAFETY: installing SIG_IGN for SIGXFSZ touches no memory of ours and has no handler to
    // race with; it is done once, before any thread writes files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Raises the soft limit on open files to the hard limit: every peer connection and every
/// sled file is a descriptor, and the common soft default of 1,024 is low for a daemon.
/// Returns the limit in force.
#[allow(unsafe_code)]
pub fn raise_open_file_limit() -> Option<libc::rlim_t> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the one struct we pass, which lives on our
    // stack for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
    }
    Some(lim.rlim_cur)
}

/// The process's effective user id: a secret file (the token's PIN file) must belong to the
/// account the node runs as.
#[allow(unsafe_code)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// The name of the operating-system user running this process (from the password database,
/// else `$USER`, else `uid <n>`): the officer an offline CLI command acts as, since it works
/// on the store directly, with no token and no account.
#[allow(unsafe_code)]
pub fn user_name() -> String {
    let uid = effective_uid();
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwuid_r writes only into `pwd`, `buf` (of the length we pass) and `result`,
    // all of which live on our stack or heap for the duration of the call; the name it
    // returns points into `buf`, read before `buf` is dropped.
    let found = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if found == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name is a NUL-terminated string inside `buf` (see above).
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        if let Ok(name) = name.to_str() {
            if !name.is_empty() {
                return name.to_owned();
            }
        }
    }
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => u,
        _ => format!("uid {uid}"),
    }
}

#[allow(unsafe_code)]
fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: libc::passwd is a plain C struct of integers and pointers, for which all-zero
    // bytes (null pointers) are a valid value; getpwuid_r fills it in.
    unsafe { std::mem::zeroed() }
}
