//! Calls to the operating system that the standard library does not make
//! (FFI; `unsafe` with `// Safety:` comments, as in the codec wrappers).

/// Turn transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`,
/// what mimalloc's own `MIMALLOC_ALLOW_THP=0` does, but that one is only read
/// before `main`). With THP a region that is touched at all is backed by whole 2 MiB
/// pages: mimalloc's arena and x264's buffers (x264 `madvise`s every allocation of
/// 1.75 MiB or more, its frames and its worst-case bitstream buffers alike) then
/// count far more resident memory than they use. Measured on the four-rung 1080p
/// ladder (docs/PERFORMANCE.md section 7, medians): peak RSS 233 -> 171 MiB, and
/// 168 -> 132 MiB with source passthrough + 3 rungs, with no measurable CPU cost. Best effort: on failure (an old kernel) THP stays as the
/// system has it.
#[cfg(target_os = "linux")]
pub fn disable_transparent_huge_pages() {
    use std::ffi::{c_int, c_ulong};
    const PR_SET_THP_DISABLE: c_int = 41; // <linux/prctl.h>
    extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
    }
    // Safety: prctl(2) is variadic in C; PR_SET_THP_DISABLE reads one unsigned
    // long (1 = disable) and requires the other three to be 0, all passed as
    // unsigned longs as the kernel reads them. It only sets a flag on this
    // process's memory map and touches no memory of ours.
    let rc = unsafe {
        prctl(
            PR_SET_THP_DISABLE,
            1 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if rc != 0 {
        eprintln!(
            "ladder: could not turn transparent huge pages off: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn disable_transparent_huge_pages() {}
