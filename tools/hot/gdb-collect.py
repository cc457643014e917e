"""gdb -batch -nx -x gdb-collect.py --args BERTH ARGS… (HOT_OUT=FILE)

Runs BERTH with a one-shot breakpoint on every function of its .text and
appends the functions it entered to FILE, in first-entry order. Used by
tools/hot/collect (make hot-functions); see cc-hot for why.
"""
import gdb, os, subprocess, re
exe = gdb.current_progspace().filename
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("handle all nostop noprint pass")
gdb.execute("set breakpoint always-inserted on")
gdb.execute("set print thread-events off")
gdb.execute("set startup-with-shell off")
gdb.execute("starti", to_string=True)
maps = gdb.execute("info proc mappings", to_string=True)
base = None
for l in maps.splitlines():
    p = l.split()
    if len(p) >= 5 and p[-1] == exe and base is None:
        base = int(p[0], 16) - int(p[3], 16)
syms = {}
for l in subprocess.run(["nm", "-S", "--defined-only", exe], capture_output=True, text=True).stdout.splitlines():
    p = l.split()
    if len(p) == 4 and p[2] in "tTwW" and int(p[1], 16) > 0:
        syms.setdefault(int(p[0], 16), p[3])
# berth's teardown helper is a clone(CLONE_VM) child: gdb detaches it and, in
# doing so, takes every breakpoint out of the memory the two share. A
# catchpoint on the clone puts them back.
gdb.execute("catch fork")
bps = {}
for a in syms:
    try:
        b = gdb.Breakpoint("*0x%x" % (base + a), internal=True, temporary=True)
        b.silent = True
        bps[b.number] = b
    except Exception as e:
        pass
hits = []
seen = set()
while True:
    try:
        gdb.execute("continue", to_string=True)
    except gdb.error:
        break
    try:
        pc = int(gdb.parse_and_eval("$pc")) - base
    except gdb.error:
        break
    if pc not in syms:
        # The catchpoint: the helper was detached; reinsert what is left.
        live = [b for b in bps.values() if b.is_valid()]
        for b in live:
            b.enabled = False
        for b in live:
            b.enabled = True
        continue
    if pc not in seen:
        seen.add(pc); hits.append(syms[pc])
    if not gdb.selected_inferior().pid:
        break
with open(os.environ["HOT_OUT"], "a") as f:
    for h in hits:
        f.write(h + "\n")
print("hits", len(hits), "of", len(syms))
