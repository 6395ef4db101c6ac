//! System calls for the programs' early paths (issue 17), which run from
//! the ELF entry point before the C library has started: the wrapper's
//! pass-through calls and the hook handed to the daemon. The rules of
//! [`crate::oci::passthrough`] hold here too: no C library calls (loops
//! that could become `memcpy`/`strlen` use volatile accesses), no pointers
//! read from static data, no allocation, no panics that can be reached.

use core::mem::MaybeUninit;
use core::ptr::{read_volatile, write_volatile};

/// Longest path the early paths build.
pub const MAX_PATH: usize = 4096;
/// Most environment entries they pass on (one more is added).
pub const MAX_ENV: usize = 1024;

/// An entry point that runs `$fast` with the initial stack pointer and,
/// when it returns, the C library's `_start` with the stack pointer and
/// `rdx` (the dynamic loader's finalizer, zero in a static binary) as
/// found. `build.rs` links the program with `--entry=$entry`.
#[macro_export]
macro_rules! early_entry {
    ($entry:ident, $fast:path) => {
        #[unsafe(naked)]
        #[no_mangle]
        unsafe extern "C" fn $entry() -> ! {
            core::arch::naked_asm!(
                "mov r12, rsp",
                "mov r13, rdx",
                "mov rdi, rsp",
                "and rsp, -16",
                "call {fast}",
                "mov rsp, r12",
                "mov rdx, r13",
                "jmp {start}",
                fast = sym $fast,
                start = sym $crate::early::_start,
            )
        }
    };
}

extern "C" {
    /// The C library's entry point (crt1.o).
    pub fn _start() -> !;
}

/// # Safety
/// A raw system call: the arguments must be what the kernel expects.
#[inline(always)]
pub unsafe fn syscall(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    syscall6(n, a, b, c, d, 0, 0)
}

/// # Safety
/// As [`syscall`].
#[inline(always)]
pub unsafe fn syscall6(
    n: libc::c_long,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> isize {
    let ret: isize;
    core::arch::asm!(
        "syscall",
        inlateout("rax") n as isize => ret,
        in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d, in("r8") e, in("r9") f,
        lateout("rcx") _, lateout("r11") _,
        options(nostack),
    );
    ret
}

/// The command line and environment the kernel put on the initial stack.
pub struct Startup {
    pub argc: usize,
    argv: *const *const u8,
    envp: *const *const u8,
}

impl Startup {
    /// # Safety
    /// `sp` is the process's initial stack pointer.
    pub unsafe fn from_stack(sp: *const usize) -> Startup {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        Startup {
            argc,
            argv,
            envp: argv.add(argc + 1),
        }
    }

    pub fn argv(&self) -> *const *const u8 {
        self.argv
    }

    /// # Safety
    /// `i < argc`.
    pub unsafe fn arg(&self, i: usize) -> &'static [u8] {
        c_bytes(*self.argv.add(i))
    }

    /// The command line without the program's name, in `store`; `None`
    /// when it is empty or longer than `N`.
    pub fn args<'s, const N: usize>(
        &self,
        store: &'s mut [MaybeUninit<&'static [u8]>; N],
    ) -> Option<&'s [&'static [u8]]> {
        if !(2..=N + 1).contains(&self.argc) {
            return None;
        }
        for i in 1..self.argc {
            // SAFETY: `i < argc`.
            store[i - 1].write(unsafe { self.arg(i) });
        }
        // SAFETY: the first `argc - 1` entries were written.
        Some(unsafe { core::slice::from_raw_parts(store.as_ptr() as *const &[u8], self.argc - 1) })
    }

    /// The `i`th environment entry, `None` past the last.
    ///
    /// # Safety
    /// Entries before `i` exist.
    pub unsafe fn env(&self, i: usize) -> Option<&'static [u8]> {
        let entry = *self.envp.add(i);
        (!entry.is_null()).then(|| c_bytes(entry))
    }

    /// Executes `program` with `argv`, this environment and `extra` (a
    /// NUL-terminated `NAME=value`) added; returns only if that fails.
    ///
    /// # Safety
    /// `program` is a C string, `argv` a NULL-terminated array of them.
    // Not inlined: its 8 KiB array would grow the caller's frame, whose
    // pages the stack probe touches whether it execs or not.
    #[inline(never)]
    pub unsafe fn exec_adding(&self, program: *const u8, argv: *const *const u8, extra: *const u8) {
        let mut env = [const { MaybeUninit::<*const u8>::uninit() }; MAX_ENV + 2];
        let mut n = 0;
        while !(*self.envp.add(n)).is_null() {
            if n >= MAX_ENV {
                return;
            }
            write_volatile(env.as_mut_ptr().add(n) as *mut *const u8, *self.envp.add(n));
            n += 1;
        }
        env[n].write(extra);
        env[n + 1].write(core::ptr::null());
        syscall(
            libc::SYS_execve,
            program as usize,
            argv as usize,
            env.as_ptr() as usize,
            0,
        );
    }
}

/// Anonymous memory for the early paths' buffers: only the pages written
/// are faulted in, where a buffer on the stack has every page of its frame
/// touched by the stack probe (~0.1 ms for 150 KiB on this VM).
pub struct Mapped {
    ptr: *mut MaybeUninit<u8>,
    len: usize,
}

impl Mapped {
    pub fn new(len: usize) -> Option<Mapped> {
        // SAFETY: an anonymous private mapping, checked below.
        let ptr = unsafe {
            syscall6(
                libc::SYS_mmap,
                0,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as usize,
                usize::MAX,
                0,
            )
        };
        // Errors are -4095..-1.
        (!(-4095..0).contains(&ptr)).then_some(Mapped {
            ptr: ptr as *mut MaybeUninit<u8>,
            len,
        })
    }

    /// The part from `at` of length `len` (empty if out of range).
    pub fn part(&mut self, at: usize, len: usize) -> &mut [MaybeUninit<u8>] {
        if at.checked_add(len).is_none_or(|end| end > self.len) {
            return &mut [];
        }
        // SAFETY: within the mapping, which lives as long as `self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's.
        unsafe { syscall(libc::SYS_munmap, self.ptr as usize, self.len, 0, 0) };
    }
}

/// A NUL-terminated string as a slice (without the NUL). Volatile reads:
/// the loop must not become a call to `strlen`.
///
/// # Safety
/// `p` points to a NUL-terminated string that lives as long as the process.
pub unsafe fn c_bytes(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    while read_volatile(p.add(n)) != 0 {
        n += 1;
    }
    core::slice::from_raw_parts(p, n)
}

/// Reads a whole file into `buf`: `Some(len)`, or `Some(0)` for a missing
/// file that was not named explicitly (defaults), `None` otherwise and for
/// a file that fills `buf`.
///
/// # Safety
/// `path` is a C string.
pub unsafe fn read_file(
    path: *const u8,
    explicit: bool,
    buf: &mut [MaybeUninit<u8>],
) -> Option<usize> {
    let fd = syscall(
        libc::SYS_openat,
        libc::AT_FDCWD as usize,
        path as usize,
        (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
        0,
    );
    if fd == -(libc::ENOENT as isize) && !explicit {
        return Some(0);
    }
    if fd < 0 {
        return None;
    }
    let (len, stop) = read_all(fd as i32, buf);
    close(fd as i32);
    (stop == Stop::End).then_some(len)
}

/// Why [`read_all`] stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The end of the stream.
    End,
    /// The buffer is full; the stream may go on.
    Full,
    /// A read failed.
    Failed,
}

/// Reads `fd` into `buf` until its end, a full buffer or an error: the
/// length read and why it stopped.
///
/// # Safety
/// `fd` is open.
pub unsafe fn read_all(fd: i32, buf: &mut [MaybeUninit<u8>]) -> (usize, Stop) {
    let mut len = 0;
    while len < buf.len() {
        let n = syscall(
            libc::SYS_read,
            fd as usize,
            buf.as_mut_ptr().add(len) as usize,
            buf.len() - len,
            0,
        );
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n < 0 {
            return (len, Stop::Failed);
        }
        if n == 0 {
            return (len, Stop::End);
        }
        len += n as usize;
    }
    (len, Stop::Full)
}

/// Writes all of `bytes` to `fd`; `send` with MSG_NOSIGNAL for a socket
/// (a peer gone is an error, not SIGPIPE).
///
/// # Safety
/// `fd` is open.
pub unsafe fn write_all(fd: i32, bytes: &[u8], socket: bool) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        let (p, len) = (bytes.as_ptr().add(done) as usize, bytes.len() - done);
        let n = if socket {
            syscall6(
                libc::SYS_sendto,
                fd as usize,
                p,
                len,
                libc::MSG_NOSIGNAL as usize,
                0,
                0,
            )
        } else {
            syscall(libc::SYS_write, fd as usize, p, len, 0)
        };
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// # Safety
/// `fd` is this process's to close.
pub unsafe fn close(fd: i32) {
    syscall(libc::SYS_close, fd as usize, 0, 0, 0);
}

/// Writes `parts` one after another and a NUL into `out` (volatile
/// writes: a copy loop must not become a call to `memcpy`).
pub fn join<const N: usize>(out: &mut [MaybeUninit<u8>; N], parts: &[&[u8]]) -> Option<*const u8> {
    let mut at = 0;
    for part in parts {
        for b in *part {
            if at + 1 >= N {
                return None;
            }
            // SAFETY: `at` is within `out`.
            unsafe { write_volatile(out.as_mut_ptr().add(at) as *mut u8, *b) };
            at += 1;
        }
    }
    // SAFETY: as above.
    unsafe { write_volatile(out.as_mut_ptr().add(at) as *mut u8, 0) };
    Some(out.as_ptr() as *const u8)
}

/// What `stat` (following links) says of a path: its type and mode, and
/// its device and inode. Only these leave: a whole `struct stat` copied
/// could become a call to `memcpy`.
#[derive(Clone, Copy)]
pub struct Stat {
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
}

/// # Safety
/// `path` is a C string.
pub unsafe fn stat(path: *const u8) -> Option<Stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    if syscall(
        libc::SYS_newfstatat,
        libc::AT_FDCWD as usize,
        path as usize,
        st.as_mut_ptr() as usize,
        0,
    ) != 0
    {
        return None;
    }
    let st = st.as_ptr();
    Some(Stat {
        mode: (*st).st_mode,
        dev: (*st).st_dev,
        ino: (*st).st_ino,
    })
}

/// Whether `path` is a regular file (following links).
///
/// # Safety
/// `path` is a C string.
pub unsafe fn is_file(path: *const u8) -> bool {
    stat(path).is_some_and(|st| st.mode & libc::S_IFMT == libc::S_IFREG)
}

/// Ends the process.
pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes a status and does not return.
        unsafe { syscall(libc::SYS_exit_group, code as usize, 0, 0, 0) };
    }
}
