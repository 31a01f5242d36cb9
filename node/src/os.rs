//! What a daemon asks of the operating system at start, in one place, because it needs
//! `unsafe` calls into libc that std does not wrap.

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
