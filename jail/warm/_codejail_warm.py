# codejail's warm-start hook: inert unless the jail hands this interpreter fd 3.
#
# scripts/setup-sandbox-venv.sh installs it in the sandbox venv's site-packages with
# zz-codejail-warm.pth, which `site` runs at every start of that interpreter, after the
# other .pth files: it imports this module only when fd 3 is a socket (in a cold run fd
# 3 is the .pth file itself, being read: the jail closes every fd above 2 at exec), so
# a cold start pays one fstat, and takes it out of sys.modules once imported.
#
# In a warm jail (jail/src/warm.rs) fd 3 is a socket to the run's init. The init sends
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
    if _cj_words[:2] != [b"codejail-warm", b"1"]:
        os._exit(125)
    try:
        for _cj_name in _cj_words[2:]:
            __import__(_cj_name.decode())
    except BaseException as _cj_e:
        _cj_msg = ("cannot import %s: %s: %s" % (_cj_name.decode(), type(_cj_e).__name__, _cj_e))
        os.write(3, b"failed " + _cj_msg.replace("\n", " ").encode("utf-8", "replace")[:2000] + b"\n")
        os._exit(1)
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
