# The program that `safe_exec` runs for each call (codejail-client embeds this file with
# include_str! and sends it as the run's code, so it runs as `python -E -B jailed_code`).
#
# It does what the wrapper that upstream CodeJail 4.x's safe_exec generates does, in the
# same order, so that jailed code sees the same world (docs/compat.md, safe_exec):
#   1. sys.stdout becomes a sink: `print` in the code is discarded;
#   2. `[code, globals]` is read as JSON from stdin;
#   3. the python_path basenames are appended to sys.path;
#   4. exec(code, globals): the code is compiled as "<string>", so the traceback lines
#      about it and the final exception line are upstream's;
#   5. json_safe(globals) is written as JSON to the real stdout.
#
# What differs, none of it visible in the code's globals:
#   - the python_path basenames arrive as arguments instead of being pasted into the
#     program text; sys.argv is reset to ['jailed_code'] before the code runs, as
#     upstream's is;
#   - no `import six` and no simplejson: the stdlib json, always (upstream's sandbox
#     requirements have no simplejson either);
#   - argv[1] is the mode: "jail", or "local" for the client's explicit unsafe mode,
#     where an exception is reported as {"error": "ExcClass: message"} like upstream's
#     not_safe_exec, and the globals as {"globals": ...}.
import json
import sys


class DevNull(object):
    def write(self, *args, **kwargs):
        pass

    def flush(self, *args, **kwargs):
        pass


sys.stdout = DevNull()

code, g_dict = json.load(sys.stdin)

mode = sys.argv[1]
sys.path.extend(sys.argv[2:])
del sys.argv[1:]

if mode == "local":
    try:
        exec(code, g_dict)
    except Exception as exc:
        error = "{0}: {1!s}".format(exc.__class__.__name__, exc)
        json.dump({"error": error}, sys.__stdout__)
        sys.exit(1)
else:
    exec(code, g_dict)


def json_safe(d):
    """The part of the dict `d` that survives a trip through JSON (upstream's rules).

    A top-level value is kept only if its type is one of `keep` (subclasses included:
    bool, float subclasses); `__builtins__` never is. Bytes become UTF-8 text and tuples
    lists, at any depth, keys included. A key whose key or value fails any of this, or
    the JSON round trip, is dropped whole. A last round trip turns non-string keys into
    JSON's strings.
    """
    keep = (type(None), int, float, bytes, str, list, tuple, dict)

    def decode(obj):
        # Raises for bytes that are not UTF-8 (and, through recursion, for cycles);
        # anything of another type is left for json.dumps to accept or refuse.
        if isinstance(obj, bytes):
            return obj.decode("utf-8")
        if isinstance(obj, (list, tuple)):
            return [decode(item) for item in obj]
        if isinstance(obj, dict):
            decoded = {}
            for key, value in obj.items():
                decoded[decode(key)] = decode(value)
            return decoded
        return obj

    safe = {}
    for key, value in d.items():
        if not isinstance(value, keep):
            continue
        if key in ("__builtins__",):
            continue
        try:
            value = json.loads(json.dumps(decode(value)))
            key = json.loads(json.dumps(decode(key)))
        except Exception:
            continue
        # Outside the try, as upstream: an unhashable key (a tuple key decodes to a
        # list) fails the whole run.
        safe[key] = value
    return json.loads(json.dumps(safe))


g_dict = json_safe(g_dict)
if mode == "local":
    json.dump({"globals": g_dict}, sys.__stdout__)
else:
    json.dump(g_dict, sys.__stdout__)
