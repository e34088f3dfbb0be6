//! A forked run's exit without module teardown (docs/architecture.md, "Fork server",
//! "Exit").
//!
//! A forked program shares the zygote's heap copy-on-write. CPython's finalization
//! after `__main__` (clearing every module, collecting, freeing the interpreter) writes
//! the reference count of nearly every object the zygote made, so each of those pages is
//! copied before being thrown away: with numpy preimported that is ~8 ms of a run that
//! otherwise takes ~1. CPython promises at exit that non-daemon threads are joined,
//! atexit handlers run and `sys.stdout`/`sys.stderr` are flushed, not that objects
//! still alive are finalized; so a forked run does those and then `_exit`s with the
//! status CPython would have exited with.
//!
//! That status is decided in C when `__main__` ends, and is gone (CPython 3.11 keeps
//! a `SystemExit`'s code only on its C stack) by the time Python code runs again. So
//! the child, before the hand-over, installs a frame evaluator
//! ([PEP 523](https://peps.python.org/pep-0523/)) that passes every frame to CPython's
//! own until it meets the `__main__` module's frame; from then on CPython's own
//! evaluator is the interpreter's again (nothing is left on the run's code path) and
//! this one only sees the main frame's result. From it, `status_of_main` takes the
//! status CPython will exit with, and [`codejail_zygote_exit`], registered as the
//! first atexit handler (so it runs last), flushes as CPython does and `_exit`s with
//! it. Whenever the status depends on code of the run's (a `SystemExit` subclass, a
//! code that is neither an int nor None, a replaced `sys.excepthook`) or on a signal
//! (`KeyboardInterrupt`), or the main frame never ended through it, it does nothing and
//! CPython finalizes as it always does.
//!
//! Only CPython 3.11 (the layout of its `_PyInterpreterFrame`); the hook arms it only
//! there. The C API is found with `dlsym` in the interpreter that loaded this library.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::sync::atomic::{AtomicI64, AtomicPtr, Ordering};
use std::sync::OnceLock;

type Obj = *mut c_void;
/// `_PyFrameEvalFunction`: (thread state, `_PyInterpreterFrame *`, throw flag).
type EvalFrame = unsafe extern "C" fn(Obj, *mut c_void, c_int) -> Obj;

/// No main frame has ended through the evaluator yet.
const NOT_SEEN: i64 = i64::MIN;
/// The status is CPython's to find: leave finalization to it.
const CPYTHONS: i64 = i64::MIN + 1;

/// The status the run will exit with, or [`NOT_SEEN`] / [`CPYTHONS`].
static STATUS: AtomicI64 = AtomicI64::new(NOT_SEEN);
/// `__main__.__dict__`, by which the main module's frame is known.
static MAIN_GLOBALS: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
static API: OnceLock<Api> = OnceLock::new();

/// The C API functions and objects used here, from the interpreter's own symbols.
struct Api {
    eval_default: EvalFrame,
    set_eval: unsafe extern "C" fn(Obj, EvalFrame),
    interp: unsafe extern "C" fn() -> Obj,
    fetch: unsafe extern "C" fn(*mut Obj, *mut Obj, *mut Obj),
    restore: unsafe extern "C" fn(Obj, Obj, Obj),
    occurred: unsafe extern "C" fn() -> Obj,
    clear: unsafe extern "C" fn(),
    is_subtype: unsafe extern "C" fn(Obj, Obj) -> c_int,
    as_long: unsafe extern "C" fn(Obj) -> c_long,
    getattr: unsafe extern "C" fn(Obj, *const c_char) -> Obj,
    call_no_args: unsafe extern "C" fn(Obj) -> Obj,
    is_true: unsafe extern "C" fn(Obj) -> c_int,
    decref: unsafe extern "C" fn(Obj),
    sys_get: unsafe extern "C" fn(*const c_char) -> Obj,
    unraisable: unsafe extern "C" fn(Obj),
    none: Obj,
    long_type: Obj,
    system_exit: Obj,
    keyboard_interrupt: Obj,
}

// SAFETY: the pointers are the interpreter's static functions and objects, valid for the
// process's life; they are only used with the GIL held.
unsafe impl Send for Api {}
// SAFETY: as above.
unsafe impl Sync for Api {}

/// The address of the symbol `name` in the process, or null.
fn symbol(name: &CStr) -> *mut c_void {
    // SAFETY: dlsym reads a NUL-terminated name; RTLD_DEFAULT searches the loaded objects.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// A function symbol as the function type `F`, or `None` if it is absent.
///
/// # Safety
///
/// `F` must be the symbol's true C signature (a function pointer type).
unsafe fn function<F: Copy>(name: &CStr) -> Option<F> {
    let p = symbol(name);
    // SAFETY: `F` is a function pointer type of the same size as a data pointer (the
    // caller's contract), and `p` is that function's address.
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// A data symbol that is itself a `PyObject *` variable (`PyExc_SystemExit`): its value.
fn object_variable(name: &CStr) -> Option<Obj> {
    let p = symbol(name).cast::<Obj>();
    // SAFETY: the symbol is a `PyObject *` variable of the interpreter, readable.
    (!p.is_null())
        .then(|| unsafe { *p })
        .filter(|o| !o.is_null())
}

fn resolve() -> Option<Api> {
    // SAFETY: each type is the documented C signature of the named function (CPython
    // 3.11's headers).
    unsafe {
        Some(Api {
            eval_default: function(c"_PyEval_EvalFrameDefault")?,
            set_eval: function(c"_PyInterpreterState_SetEvalFrameFunc")?,
            interp: function(c"PyInterpreterState_Get")?,
            fetch: function(c"PyErr_Fetch")?,
            restore: function(c"PyErr_Restore")?,
            occurred: function(c"PyErr_Occurred")?,
            clear: function(c"PyErr_Clear")?,
            is_subtype: function(c"PyType_IsSubtype")?,
            as_long: function(c"PyLong_AsLong")?,
            getattr: function(c"PyObject_GetAttrString")?,
            call_no_args: function(c"PyObject_CallNoArgs")?,
            is_true: function(c"PyObject_IsTrue")?,
            decref: function(c"Py_DecRef")?,
            sys_get: function(c"PySys_GetObject")?,
            unraisable: function(c"PyErr_WriteUnraisable")?,
            none: Some(symbol(c"_Py_NoneStruct")).filter(|p| !p.is_null())?,
            long_type: Some(symbol(c"PyLong_Type")).filter(|p| !p.is_null())?,
            system_exit: object_variable(c"PyExc_SystemExit")?,
            keyboard_interrupt: object_variable(c"PyExc_KeyboardInterrupt")?,
        })
    }
}

/// In the zygote, before it forks: find the C API this needs. Returns 0, or `-ENOSYS`
/// when the interpreter lacks a symbol (its children then exit as CPython does).
#[no_mangle]
pub extern "C" fn codejail_zygote_exit_prepare() -> c_int {
    if API.get().is_none() {
        match resolve() {
            Some(api) => {
                let _ = API.set(api);
            }
            None => return -libc::ENOSYS,
        }
    }
    0
}

/// In the run's program, with the GIL held, before the hand-over: know the main
/// module's frame by `main_globals` (`__main__.__dict__`) and install the evaluator that
/// waits for it. Returns 0, or `-ENOSYS` when [`codejail_zygote_exit_prepare`] did not
/// succeed (nothing is installed then).
///
/// # Safety
///
/// Called from CPython 3.11 holding the GIL, `main_globals` the `__main__` module's dict.
#[no_mangle]
pub unsafe extern "C" fn codejail_zygote_exit_arm(main_globals: Obj) -> c_int {
    let Some(api) = API.get() else {
        return -libc::ENOSYS;
    };
    if main_globals.is_null() {
        return -libc::EINVAL;
    }
    MAIN_GLOBALS.store(main_globals, Ordering::Relaxed);
    // SAFETY: the GIL is held (the caller's contract); the interpreter is this thread's.
    unsafe { (api.set_eval)((api.interp)(), evaluate) };
    0
}

/// The frame evaluator while armed: CPython's own for every frame; for the main
/// module's, CPython's own is first put back (the run's code runs exactly as it would)
/// and the frame's result gives the status.
unsafe extern "C" fn evaluate(tstate: Obj, frame: *mut c_void, throw: c_int) -> Obj {
    let Some(api) = API.get() else {
        // Unreachable: arming needs the API. Evaluate nothing rather than guess.
        return std::ptr::null_mut();
    };
    // SAFETY: `frame` is a live `_PyInterpreterFrame` (CPython 3.11: f_func, f_globals,
    // f_builtins, f_locals, f_code, frame_obj, previous, each a pointer).
    let (globals, locals, previous) = unsafe {
        let slots = frame.cast::<*mut c_void>();
        (*slots.add(1), *slots.add(3), *slots.add(6))
    };
    let main = MAIN_GLOBALS.load(Ordering::Relaxed);
    if globals != main || locals != main || !previous.is_null() {
        // SAFETY: CPython's evaluator, called as CPython calls the installed one.
        return unsafe { (api.eval_default)(tstate, frame, throw) };
    }
    // SAFETY: GIL held (this is the interpreter evaluating a frame).
    unsafe {
        (api.set_eval)((api.interp)(), api.eval_default);
        let result = (api.eval_default)(tstate, frame, throw);
        STATUS.store(status_of_main(api, result), Ordering::Relaxed);
        result
    }
}

/// The type of `obj` (`ob_type`, the second word of every object).
///
/// # Safety
///
/// `obj` is a live object.
unsafe fn type_of(obj: Obj) -> Obj {
    // SAFETY: every PyObject starts with ob_refcnt then ob_type.
    unsafe { *obj.cast::<Obj>().add(1) }
}

/// The status CPython exits with after `__main__` returned `result` (null: an
/// exception is set), or [`CPYTHONS`] when that takes the run's own code to find.
///
/// # Safety
///
/// GIL held, right after the main frame's evaluation.
unsafe fn status_of_main(api: &Api, result: Obj) -> i64 {
    if !result.is_null() {
        return 0;
    }
    let (mut kind, mut value, mut tb) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    // SAFETY: GIL held; the exception is taken and put back unchanged.
    unsafe {
        (api.fetch)(&mut kind, &mut value, &mut tb);
        if kind.is_null() {
            return CPYTHONS;
        }
        let status = status_of_exception(api, kind, value);
        (api.restore)(kind, value, tb);
        status
    }
}

/// # Safety
///
/// GIL held, no exception set; `kind` an exception type, `value` null or an object.
unsafe fn status_of_exception(api: &Api, kind: Obj, value: Obj) -> i64 {
    // SAFETY: GIL held; only C-level reads and builtin attribute lookups below.
    unsafe {
        if (api.is_subtype)(kind, api.system_exit) != 1 {
            if (api.is_subtype)(kind, api.keyboard_interrupt) == 1 {
                // CPython re-raises SIGINT on itself after finalizing.
                return CPYTHONS;
            }
            let hook = (api.sys_get)(c"excepthook".as_ptr());
            let original = (api.sys_get)(c"__excepthook__".as_ptr());
            // The default hook prints the traceback; a run's own might exit otherwise.
            return if !hook.is_null() && hook == original {
                1
            } else {
                CPYTHONS
            };
        }
        // `sys.exit(x)` leaves `x` as the value (3.11 normalizes lazily); `raise
        // SystemExit(x)` an instance whose `code` is `x`. A subclass's `code` may be
        // the run's own code: CPython's to read.
        let mut code = value;
        let mut owned = std::ptr::null_mut();
        if !value.is_null() && type_of(value) == api.system_exit {
            owned = (api.getattr)(value, c"code".as_ptr());
            if owned.is_null() {
                (api.clear)();
                return CPYTHONS;
            }
            code = owned;
        } else if !value.is_null() && (api.is_subtype)(type_of(value), api.system_exit) == 1 {
            return CPYTHONS;
        }
        let status = if code.is_null() || code == api.none {
            0
        } else if (api.is_subtype)(type_of(code), api.long_type) == 1 {
            // As CPython: `(int)PyLong_AsLong(code)`, -1 on overflow.
            let n = (api.as_long)(code);
            if n == -1 && !(api.occurred)().is_null() {
                (api.clear)();
            }
            i64::from(n as c_int)
        } else {
            // CPython prints the code (`str()` of an object of the run's) and exits 1.
            CPYTHONS
        };
        if !owned.is_null() {
            (api.decref)(owned);
        }
        status
    }
}

/// The first atexit handler of a forked run (so the last to run): once the run's own
/// handlers ran and its non-daemon threads were joined, flush `sys.stdout` and
/// `sys.stderr` (then `sys.__stdout__` and `sys.__stderr__`) as CPython's finalization
/// does, and the C library's streams, and `_exit` with the status CPython would have
/// exited with (120 if a flush failed, as CPython). Returns, leaving finalization to
/// CPython, when that status is not known here.
///
/// # Safety
///
/// Called by CPython's atexit, holding the GIL (loaded with `ctypes.PyDLL`).
#[no_mangle]
pub unsafe extern "C" fn codejail_zygote_exit() {
    let status = STATUS.load(Ordering::Relaxed);
    let Some(api) = API.get() else { return };
    if status == NOT_SEEN || status == CPYTHONS {
        return;
    }
    let mut status = status as c_int;
    // SAFETY: GIL held (the caller's contract).
    unsafe {
        let mut flushed: Vec<Obj> = Vec::with_capacity(4);
        for name in [c"stdout", c"stderr", c"__stdout__", c"__stderr__"] {
            let file = (api.sys_get)(name.as_ptr());
            if file.is_null() || file == api.none || flushed.contains(&file) {
                continue;
            }
            flushed.push(file);
            if !flush(api, file) {
                status = 120;
            }
        }
        libc::fflush(std::ptr::null_mut());
        libc::_exit(status)
    }
}

/// CPython's `flush_std_files` for one file: skipped when it says it is closed; a
/// failed `flush()` is reported as unraisable. Returns whether it did not fail.
///
/// # Safety
///
/// GIL held, `file` a live object.
unsafe fn flush(api: &Api, file: Obj) -> bool {
    // SAFETY: GIL held; plain C API calls on a live object.
    unsafe {
        let closed = (api.getattr)(file, c"closed".as_ptr());
        if closed.is_null() {
            (api.clear)();
        } else {
            let is = (api.is_true)(closed);
            (api.decref)(closed);
            if is < 0 {
                (api.clear)();
            }
            if is > 0 {
                return true;
            }
        }
        let method = (api.getattr)(file, c"flush".as_ptr());
        let done = if method.is_null() {
            std::ptr::null_mut()
        } else {
            let r = (api.call_no_args)(method);
            (api.decref)(method);
            r
        };
        if done.is_null() {
            (api.unraisable)(file);
            return false;
        }
        (api.decref)(done);
        true
    }
}
