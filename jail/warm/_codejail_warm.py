# codejail's warm-start hook: inert unless the jail hands this interpreter fd 3.
#
# scripts/setup-sandbox-venv.sh installs it in the sandbox venv's site-packages with
# zz-codejail-warm.pth, which `site` runs at every start of that interpreter, after the
# other .pth files: it imports this module only when fd 3 is a socket (in a cold run fd
# 3 is the .pth file itself, being read: the jail closes every fd above 2 at exec), so
# a cold start pays one fstat, and takes it out of sys.modules once imported.
#
# In a zygote (a fork server: jail/src/forked.rs) fd 3 is a socket to the broker; see
# the zygote block below. In a warm jail (jail/src/warm.rs) fd 3 is a socket to the
# run's init. The init sends
# the modules to import; they are imported, "ready" is answered, and the interpreter
# waits here, inside its own start-up, until the init has written the run's files into
# the workspace (which this process cannot write) and set its limits. Then the init
# sends the script's arguments; they go into sys.argv, the CPU used so far is
# reported (it is not the caller's), fd 3 is closed, the .pth line removes the module, and
# CPython goes on to run `jailed_code` as __main__ exactly as a cold start does.
#
# No functions, no classes, no imports beyond what start-up already loaded: once this
# module is out of sys.modules nothing of it is left for the run to find.
import os
import sys

try:
    _cj_st = os.fstat(3)
except OSError:
    _cj_st = None
if _cj_st is not None and (_cj_st.st_mode & 0o170000) == 0o140000:
    _cj_buf = b""
    while not _cj_buf.endswith(b"\n"):
        _cj_chunk = os.read(3, 4096)
        if not _cj_chunk:
            os._exit(125)
        _cj_buf += _cj_chunk
    _cj_words = _cj_buf.split()
    _cj_zygote = _cj_words[:2] == [b"codejail-zygote", b"1"] and len(_cj_words) >= 3
    if not _cj_zygote and _cj_words[:2] != [b"codejail-warm", b"1"]:
        os._exit(125)
    # The preimports: a warm jail's, or a zygote's (which its children then have).
    try:
        for _cj_name in _cj_words[3 if _cj_zygote else 2:]:
            __import__(_cj_name.decode())
    except BaseException as _cj_e:
        _cj_msg = ("cannot import %s: %s: %s" % (_cj_name.decode(), type(_cj_e).__name__, _cj_e))
        os.write(3, b"failed " + _cj_msg.replace("\n", " ").encode("utf-8", "replace")[:2000] + b"\n")
        os._exit(1)
    if _cj_zygote:
        # Zygote mode (jail/src/forked.rs, zygote/src/lib.rs): fd 3 is the broker's
        # socket, the greeting names the native library and the preimports. Answer
        # "ready", then clone one child per request, into the run's new namespaces: the
        # child is the run's init, and the library returns only in the run's program,
        # which the init forked and confined (fd 3 now the channel to the init), to go
        # on below as a warm jail's interpreter. The zygote itself never leaves this
        # block.
        try:
            # What the zygote imports for itself, which its children drop again.
            _cj_before = set(sys.modules)
            import ctypes as _cj_ctypes
            import gc as _cj_gc
            _cj_lib = _cj_ctypes.CDLL(os.fsdecode(_cj_words[2]))
            if _cj_lib.codejail_zygote_init() != 0:
                os._exit(1)
            # A forked run exits without module teardown where the library knows the
            # interpreter's frames (zygote/src/exit.rs): its handler runs with the GIL.
            _cj_exit = None
            if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
                import atexit as _cj_atexit
                _cj_pylib = _cj_ctypes.PyDLL(os.fsdecode(_cj_words[2]))
                if _cj_pylib.codejail_zygote_exit_prepare() == 0:
                    _cj_exit = _cj_pylib.codejail_zygote_exit
                    _cj_exit.restype = None
                    _cj_arm = _cj_pylib.codejail_zygote_exit_arm
                    _cj_arm.argtypes = (_cj_ctypes.c_void_p,)
            # The clone runs between the interpreter's own before- and after-fork
            # calls, as os.fork makes them, with the GIL held (PyDLL).
            _cj_spawn = _cj_ctypes.PyDLL(os.fsdecode(_cj_words[2])).codejail_zygote_spawn
            _cj_spawn.argtypes = (_cj_ctypes.c_uint, _cj_ctypes.c_uint, _cj_ctypes.c_void_p)
            _cj_pidfd = _cj_ctypes.c_int(-1)
            _cj_pidfd_at = _cj_ctypes.addressof(_cj_pidfd)
            _cj_lib.codejail_zygote_child.restype = _cj_ctypes.c_ssize_t
            _cj_lib.codejail_zygote_child.argtypes = (
                _cj_ctypes.c_void_p, _cj_ctypes.c_int, _cj_ctypes.c_void_p, _cj_ctypes.c_size_t,
                _cj_ctypes.c_uint, _cj_ctypes.c_uint)
            # site is reading this hook's .pth file while the hook runs, and reads on
            # once it returns: the file's fd number, for the child to keep readable.
            _cj_pth = -1
            for _cj_fd in os.listdir("/proc/self/fd"):
                try:
                    if os.readlink("/proc/self/fd/" + _cj_fd).endswith("/zz-codejail-warm.pth"):
                        _cj_pth = int(_cj_fd)
                except OSError:
                    pass
            # CPython made the script's path absolute at its start, from the zygote's
            # cwd, and opens that path once this hook returns: each child points the
            # interpreter's config at its own run directory's instead. The field is
            # found by its value (a pointer inside PyConfig to that path, dereferenced
            # only inside readable mappings), exactly once, or the zygote refuses.
            _cj_api = _cj_ctypes.pythonapi
            _cj_api.PyInterpreterState_Get.restype = _cj_ctypes.c_void_p
            _cj_api._PyInterpreterState_GetConfig.restype = _cj_ctypes.c_void_p
            _cj_api._PyInterpreterState_GetConfig.argtypes = (_cj_ctypes.c_void_p,)
            _cj_api.PyMem_RawMalloc.restype = _cj_ctypes.c_void_p
            _cj_api.PyMem_RawMalloc.argtypes = (_cj_ctypes.c_size_t,)
            _cj_cfg = _cj_api._PyInterpreterState_GetConfig(_cj_api.PyInterpreterState_Get())
            _cj_maps = []
            with open("/proc/self/maps") as _cj_f:
                for _cj_line in _cj_f:
                    _cj_range, _cj_perms = _cj_line.split()[:2]
                    if _cj_perms.startswith("r"):
                        _cj_lo, _cj_hi = _cj_range.split("-")
                        _cj_maps.append((int(_cj_lo, 16), int(_cj_hi, 16)))
            _cj_script = os.getcwd() + "/" + sys.argv[0]
            _cj_want = bytes(_cj_ctypes.create_unicode_buffer(_cj_script))
            _cj_slots = []
            for _cj_off in range(0, 4096, 8):
                _cj_at = _cj_cfg + _cj_off
                if not any(lo <= _cj_at and _cj_at + 8 <= hi for lo, hi in _cj_maps):
                    break
                _cj_p = _cj_ctypes.c_void_p.from_address(_cj_at).value
                _cj_n = len(_cj_want)
                if _cj_p and any(lo <= _cj_p and _cj_p + _cj_n <= hi for lo, hi in _cj_maps):
                    if _cj_ctypes.string_at(_cj_p, _cj_n) == _cj_want:
                        _cj_slots.append(_cj_at)
            if sys.argv[0].startswith("/") or len(_cj_slots) != 1:
                os.write(3, b"failed the script's path is not in the interpreter's config once\n")
                os._exit(1)
            _cj_fds = (_cj_ctypes.c_int * 8)()
            _cj_ids = (_cj_ctypes.c_uint * 2)()
            _cj_env = _cj_ctypes.create_string_buffer(1 << 16)
            # A process's first compile() is slow: once here, not in every run.
            compile("pass", "<codejail-zygote>", "exec")
            # Nothing buffered may be copied into the children; what exists now is
            # never collected, so forked pages stay shared.
            sys.stdout.flush()
            sys.stderr.flush()
            _cj_gc.freeze()
            _cj_own = set(sys.modules) - _cj_before
            # Every child gets a copy of this process: nothing in it may be shared
            # between runs or left dangling. No writable shared mapping (a channel
            # between runs), no fd but stdio, the broker's socket and the .pth file
            # (the children close the others under the objects that own them).
            with open("/proc/self/maps") as _cj_f:
                for _cj_line in _cj_f:
                    _cj_perms = _cj_line.split()[1]
                    if _cj_perms[1] == "w" and _cj_perms[3] == "s":
                        _cj_msg = "failed a writable shared mapping in the zygote: " + _cj_line.strip()
                        os.write(3, _cj_msg.encode()[:600] + b"\n")
                        os._exit(1)
            for _cj_fd in os.listdir("/proc/self/fd"):
                try:
                    _cj_target = os.readlink("/proc/self/fd/" + _cj_fd)
                except OSError:
                    continue
                if int(_cj_fd) not in (0, 1, 2, 3, _cj_pth):
                    os.write(3, ("failed the zygote holds fd %s (%s)\n" % (_cj_fd, _cj_target)).encode()[:600])
                    os._exit(1)
            # The clone runs no C at-fork handler (zygote/src/lib.rs): a thread a native
            # library of the preimports started would be left half-alive in every child.
            _cj_threads = len(os.listdir("/proc/self/task"))
            if _cj_threads != 1:
                _cj_msg = ("failed the zygote runs %d threads after its preimports (a native "
                           "library started them; e.g. OPENBLAS_NUM_THREADS=1 in the command's "
                           "env); a fork server needs one" % _cj_threads)
                os.write(3, _cj_msg.encode() + b"\n")
                os._exit(1)
            os.write(3, b"ready\n")
            while True:
                _cj_n = _cj_lib.codejail_zygote_receive(3, _cj_fds, 8, _cj_ids)
                if _cj_n <= 0:
                    os._exit(0 if _cj_n == 0 else 1)
                # The child is the run's init, in the run's new namespaces
                # (zygote/src/lib.rs, codejail_zygote_spawn).
                _cj_api.PyOS_BeforeFork()
                _cj_pid = _cj_spawn(_cj_ids[0], _cj_ids[1], _cj_pidfd_at)
                if _cj_pid == 0:
                    _cj_api.PyOS_AfterFork_Child()
                    break
                _cj_api.PyOS_AfterFork_Parent()
                if _cj_pid < 0:
                    os._exit(1)
                # The clone made the pidfd (the kernel reaps the child as soon as it
                # exits: SIGCHLD is ignored, and its pid could be reused).
                for _cj_i in range(_cj_n):
                    os.close(_cj_fds[_cj_i])
                if _cj_lib.codejail_zygote_answer(3, _cj_pid, _cj_pidfd.value) != 0:
                    os._exit(1)
                os.close(_cj_pidfd.value)
            # The child: confined by the library, or gone.
            _cj_len = _cj_lib.codejail_zygote_child(_cj_fds, _cj_n, _cj_env, 1 << 16, _cj_ids[0], _cj_ids[1])
            if _cj_len < 0:
                os._exit(1)
            # The library closed the .pth file with every other fd: site's next read
            # of it must find its end, as the file's own would.
            if _cj_pth > 3:
                _cj_r, _cj_w = os.pipe()
                os.close(_cj_w)
                if _cj_r != _cj_pth:
                    os.dup2(_cj_r, _cj_pth)
                    os.close(_cj_r)
            _cj_want = _cj_ctypes.create_unicode_buffer(os.getcwd() + "/" + sys.argv[0])
            _cj_p = _cj_api.PyMem_RawMalloc(_cj_ctypes.sizeof(_cj_want))
            if not _cj_p:
                os._exit(1)
            _cj_ctypes.memmove(_cj_p, _cj_want, _cj_ctypes.sizeof(_cj_want))
            _cj_ctypes.c_void_p.from_address(_cj_slots[0]).value = _cj_p
            os.environ.clear()
            for _cj_var in _cj_env.raw[:_cj_len].split(b"\0")[:-1]:
                _cj_key, _, _cj_value = _cj_var.partition(b"=")
                os.environ[os.fsdecode(_cj_key)] = os.fsdecode(_cj_value)
            # tempfile caches the directory it found first: the zygote's, not the run's.
            if "tempfile" in sys.modules:
                sys.modules["tempfile"].tempdir = None
            # Global generators seeded in the zygote would be the same in every run:
            # the stdlib's random reseeds itself at fork, these do not.
            if "numpy.random" in sys.modules:
                sys.modules["numpy.random"].seed()
            if "random2" in sys.modules:
                sys.modules["random2"].seed()
            for _cj_name in _cj_own:
                sys.modules.pop(_cj_name, None)
            # Registered first, the exit handler runs after every handler of the run's;
            # one the preimports registered would run after it, so then there is none.
            if _cj_exit is not None and _cj_atexit._ncallbacks() == 0:
                _cj_atexit.register(_cj_exit)
                _cj_arm(id(sys.modules["__main__"].__dict__))
            del _cj_lib, _cj_api, _cj_ctypes, _cj_gc, _cj_fds, _cj_ids, _cj_env, _cj_spawn
            del _cj_pidfd
        except BaseException:
            os._exit(1)
        # The run's init now greets this interpreter as a warm jail's, with the same
        # preimports, loaded above.
        _cj_buf = b""
        while not _cj_buf.endswith(b"\n"):
            _cj_chunk = os.read(3, 4096)
            if not _cj_chunk:
                os._exit(125)
            _cj_buf += _cj_chunk
        if _cj_buf.split()[:2] != [b"codejail-warm", b"1"]:
            os._exit(125)
    os.write(3, b"ready\n")
    _cj_buf = b""
    while True:
        _cj_chunk = os.read(3, 65536)
        if not _cj_chunk:
            break
        _cj_buf += _cj_chunk
    _cj_parts = _cj_buf.split(b"\0")
    if _cj_parts[0] != b"go":
        os._exit(125)
    _cj_args = [os.fsdecode(_cj_a) for _cj_a in _cj_parts[1:]]
    sys.argv[1:] = _cj_args
    if hasattr(sys, "orig_argv"):
        sys.orig_argv.extend(_cj_args)
    _cj_t = os.times()
    os.write(3, b"ack %d %d\n" % (int(_cj_t.user * 1e6), int(_cj_t.system * 1e6)))
    os.close(3)
for _cj_key in [k for k in globals() if k.startswith("_cj_")]:
    del globals()[_cj_key]
del _cj_key
