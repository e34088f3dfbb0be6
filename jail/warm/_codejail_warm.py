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
# run's init. The init sends the modules to import; they are imported, "ready" is
# answered, and the interpreter waits here, inside its own start-up, until the init
# has written the run's files into the workspace (which this process cannot write) and
# set its limits. Then the init sends the script's arguments; they go into sys.argv,
# the CPU used so far is reported (it is not the caller's), fd 3 is closed, the .pth
# line removes the module, and CPython goes on to run `jailed_code` as __main__
# exactly as a cold start does.
#
# No classes and no imports beyond what start-up already loaded; the functions below
# and every name of ours are deleted before the run's code can run: once this module
# is out of sys.modules nothing of it is left for the run to find.
import builtins as _cj_builtins
import os
import sys

try:
    _cj_st = os.fstat(3)
except OSError:
    _cj_st = None
# In a venv, a zygote's site runs this file's .pth line again (its second pass over
# site-packages, for sys.prefix) while the zygote's import hook below waits for
# sitecustomize: that time there is nothing to do. The zygote marks that wait with
# this name in sys.modules, which it takes out again before its first fork.
_cj_serving = "_codejail_zygote_waits" in sys.modules
if _cj_st is not None and (_cj_st.st_mode & 0o170000) == 0o140000 and not _cj_serving:

    def _cj_greeting():
        # The first line on fd 3, split in words; the process ends if fd 3 ends first.
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = os.read(3, 4096)
            if not chunk:
                os._exit(125)
            buf += chunk
        return buf.split()

    _cj_words = _cj_greeting()
    _cj_zygote = _cj_words[:2] == [b"codejail-zygote", b"4"] and len(_cj_words) >= 3
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

    def _cj_handover():
        # A warm jail's hand-over, on fd 3 (the channel to the run's init).
        os.write(3, b"ready\n")
        buf = b""
        while True:
            chunk = os.read(3, 65536)
            if not chunk:
                break
            buf += chunk
        parts = buf.split(b"\0")
        if parts[0] != b"go":
            os._exit(125)
        args = [os.fsdecode(a) for a in parts[1:]]
        sys.argv[1:] = args
        if hasattr(sys, "orig_argv"):
            sys.orig_argv.extend(args)
        t = os.times()
        os.write(3, b"ack %d %d\n" % (int(t.user * 1e6), int(t.system * 1e6)))
        os.close(3)

    if _cj_zygote:
        # Zygote mode (jail/src/forked.rs, zygote/src/lib.rs): fd 3 is the broker's
        # socket, the greeting names the native library and the preimports. The
        # zygote loads the library and finds what each child must change, then lets
        # site finish (what site does after this hook is the same in every run, so
        # the zygote does it once, not each child), and, at site's import of
        # sitecustomize (`_cj_serve`; only usercustomize may come after it), answers
        # "ready" and clones one child per request into the run's new namespaces: the
        # child is the run's init, and the library returns only in the run's program,
        # which the init forked and confined (fd 3 now the channel to the init), to go
        # on as a warm jail's interpreter and then import sitecustomize as a cold
        # start does. The zygote itself never returns from that import.
        try:
            # What the zygote imports for itself, which its children drop again.
            _cj_before = set(sys.modules)
            import ctypes as _cj_ctypes
            import gc as _cj_gc
            # One handle for every call, each with the GIL held (PyDLL): the loop
            # clones between the interpreter's own fork calls, the exit handler reads
            # its frames.
            _cj_lib = _cj_ctypes.PyDLL(os.fsdecode(_cj_words[2]))
            _cj_e = _cj_lib.codejail_zygote_init()
            if _cj_e != 0:
                os.write(3, b"failed the library could not prepare the zygote: " + os.strerror(-_cj_e).encode() + b"\n")
                os._exit(1)
            del _cj_e
            # A forked run exits without module teardown where the library knows the
            # interpreter's frames (zygote/src/exit.rs): its handler runs with the GIL.
            _cj_exit = None
            if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
                import atexit as _cj_atexit
                if _cj_lib.codejail_zygote_exit_prepare() == 0:
                    _cj_exit = _cj_lib.codejail_zygote_exit
                    _cj_exit.restype = None
                    _cj_arm = _cj_lib.codejail_zygote_exit_arm
                    _cj_arm.argtypes = (_cj_ctypes.c_void_p,)
            # The zygote's loop is the library's (codejail_zygote_serve): it receives
            # each request and clones its child between the interpreter's own before-
            # and after-fork calls, as os.fork makes them, with the GIL held (PyDLL),
            # and answers the broker; no Python runs per request in the zygote, so
            # none of its pages is written (and copied) again after each fork. The
            # child becomes the run's init in the library, never returning here; the
            # call returns only in the run's program, which the init forked.
            _cj_loop = _cj_lib.codejail_zygote_serve
            _cj_loop.argtypes = (_cj_ctypes.c_int, _cj_ctypes.c_void_p, _cj_ctypes.c_void_p)
            # Where the program finds its environment: the library's own buffer, as
            # long as the run's plan makes it (a cold run's exec takes the same).
            _cj_env = _cj_ctypes.c_void_p()
            _cj_env_at = _cj_ctypes.addressof(_cj_env)
            _cj_env_len = _cj_ctypes.c_ssize_t(-1)
            _cj_env_len_at = _cj_ctypes.addressof(_cj_env_len)
            # CPython made the script's path absolute at its start, from the zygote's
            # cwd, and opens that path once start-up is over: each child points the
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
            # The field points at a buffer of the zygote's, PATH_MAX wide characters
            # (with the zygote's own path in it, still valid), which the library
            # fills with each child's path (its run directory's) in the child's copy:
            # a page or two written, no allocation, no Python in the child.
            _cj_lib.codejail_zygote_script_path.argtypes = (
                _cj_ctypes.c_void_p, _cj_ctypes.c_size_t, _cj_ctypes.c_char_p, _cj_ctypes.c_size_t)
            _cj_path_room = 4096
            _cj_path_buf = _cj_api.PyMem_RawMalloc(_cj_path_room * _cj_ctypes.sizeof(_cj_ctypes.c_wchar))
            _cj_argv0 = os.fsencode(sys.argv[0])
            if (not _cj_path_buf or len(_cj_want) > _cj_path_room * _cj_ctypes.sizeof(_cj_ctypes.c_wchar)
                    or _cj_lib.codejail_zygote_script_path(
                        _cj_ctypes.c_void_p(_cj_path_buf), _cj_path_room, _cj_argv0, len(_cj_argv0)) != 0):
                os.write(3, b"failed no room for the script's path\n")
                os._exit(1)
            _cj_ctypes.memmove(_cj_path_buf, _cj_want, len(_cj_want))
            _cj_ctypes.c_void_p.from_address(_cj_slots[0]).value = _cj_path_buf
            # A process's first compile() is slow: once here, not in every run.
            compile("pass", "<codejail-zygote>", "exec")
            _cj_own = set(sys.modules) - _cj_before
            # Every object alive at a fork that a child frees is a page the child
            # copies (its reference count is written): what only the set-up above
            # needed goes now, once, not in every run.
            del _cj_before, _cj_maps, _cj_f, _cj_line, _cj_range, _cj_perms, _cj_lo, _cj_hi
            del _cj_script, _cj_want, _cj_off, _cj_at, _cj_p, _cj_cfg, _cj_slots
            del _cj_path_room, _cj_path_buf, _cj_argv0, _cj_lib, _cj_api
            del _cj_st, _cj_words
            globals().pop("_cj_name", None)
        except BaseException:
            os._exit(1)

        def _cj_serve(name, globals=None, locals=None, fromlist=(), level=0):
            # builtins.__import__ from here until site imports sitecustomize: every
            # other import passes through.
            if name != "sitecustomize" or level != 0:
                return _cj_import(name, globals, locals, fromlist, level)
            # Whatever replaced this function meanwhile (a .pth file's wrapper) could
            # not be put back as a cold start has it: refuse rather than drop it.
            if _cj_builtins.__import__ is not _cj_serve:
                os.write(3, b"failed builtins.__import__ was replaced while site ran; "
                            b"a fork server cannot fork where sitecustomize is imported\n")
                os._exit(1)
            _cj_builtins.__import__ = _cj_import
            sys.modules.pop("_codejail_zygote_waits", None)
            try:
                env = _cj_fork()
                # The child: every line from here on runs in each run, and what it
                # touches is copied. os.environ's own dict (posix.environ, shared
                # with os.environb), filled as CPython fills it at start from the C
                # environment, which the library has set: the first of a name wins.
                data = os.environ._data
                data.clear()
                for var in env.split(b"\0")[:-1]:
                    key, _, value = var.partition(b"=")
                    data.setdefault(key, value)
                # tempfile caches the directory it found first: the zygote's.
                if "tempfile" in sys.modules:
                    sys.modules["tempfile"].tempdir = None
                # Global generators seeded in the zygote would be the same in every
                # run: the stdlib's random reseeds itself at fork, these do not.
                if "numpy.random" in sys.modules:
                    sys.modules["numpy.random"].seed()
                if "random2" in sys.modules:
                    sys.modules["random2"].seed()
                for own in _cj_own:
                    sys.modules.pop(own, None)
                # Registered first, the exit handler runs after every handler of the
                # run's; one the preimports registered would run after it, so then
                # there is none.
                if _cj_exit is not None and _cj_atexit._ncallbacks() == 0:
                    _cj_atexit.register(_cj_exit)
                    _cj_arm(id(sys.modules["__main__"].__dict__))
                # The run's init now greets this interpreter as a warm jail's, with
                # the same preimports, loaded above.
                if _cj_greeting()[:2] != [b"codejail-warm", b"1"]:
                    os._exit(125)
                _cj_handover()
                # Nothing of this module is left once this frame ends, with the
                # import it hands on.
                imp = _cj_import
                _cj_serve.__globals__.clear()
            except BaseException:
                os._exit(1)
            return imp(name, globals, locals, fromlist, level)

        def _cj_fork():
            # At the fork point: nothing in the zygote may be shared by its children
            # or left dangling in them. Returns, in the child only, the environment
            # the library set, as bytes: each KEY=value ended by a NUL.
            # Nothing buffered may be copied into the children; what exists now is
            # never collected, so forked pages stay shared.
            sys.stdout.flush()
            sys.stderr.flush()
            _cj_gc.freeze()
            # No writable shared mapping (a channel between runs), no fd but stdio and
            # the broker's socket (the children close the others under the objects
            # that own them).
            with open("/proc/self/maps") as f:
                for line in f:
                    perms = line.split()[1]
                    if perms[1] == "w" and perms[3] == "s":
                        msg = "failed a writable shared mapping in the zygote: " + line.strip()
                        os.write(3, msg.encode()[:600] + b"\n")
                        os._exit(1)
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink("/proc/self/fd/" + fd)
                except OSError:
                    continue
                if int(fd) not in (0, 1, 2, 3):
                    os.write(3, ("failed the zygote holds fd %s (%s)\n" % (fd, target)).encode()[:600])
                    os._exit(1)
            # The clone runs no C at-fork handler (zygote/src/lib.rs): a thread a native
            # library of the preimports started would be left half-alive in every child.
            threads = len(os.listdir("/proc/self/task"))
            if threads != 1:
                msg = ("failed the zygote runs %d threads after its preimports and site (a native "
                       "library started them; e.g. OPENBLAS_NUM_THREADS=1 in the command's "
                       "env); a fork server needs one" % threads)
                os.write(3, msg.encode() + b"\n")
                os._exit(1)
            f = line = perms = fd = target = threads = None
            loop, env, env_at = _cj_loop, _cj_env, _cj_env_at
            env_len, env_len_at, string_at = _cj_env_len, _cj_env_len_at, _cj_ctypes.string_at
            os.write(3, b"ready\n")
            # The zygote serves until the broker closes its socket, and exits there.
            if loop(3, env_at, env_len_at) != 0:
                os._exit(1)
            # The run's program, confined by the library, which has made the
            # interpreter's after-fork call, set the C environment and pointed the
            # script's path at the run's directory.
            return string_at(env.value, env_len.value)

        _cj_import = _cj_builtins.__import__
        _cj_builtins.__import__ = _cj_serve
        sys.modules["_codejail_zygote_waits"] = None
    else:
        _cj_handover()
# A zygote's names stay until its children have used them (`_cj_serve` deletes them).
if "_cj_serve" not in globals():
    for _cj_key in [k for k in globals() if k.startswith("_cj_")]:
        del globals()[_cj_key]
    del _cj_key
