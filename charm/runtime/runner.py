#!/usr/bin/env python3
# charmflow hook runner: a thin launcher (stdlib only, `python3 -S`, >= 3.8).
#
#   python3 -S runner.py < HookContext.json   -> HookEvent JSON lines on stdout
#   python3 -S runner.py install-tools BINDIR -> (re)create the hook tool symlinks
#
# The code lives in cf_runner.py next to this file. A script run by path is
# compiled on every run; an imported module is loaded from its cached bytecode
# (__pycache__, written by install-tools), so this file stays tiny.
import sys

if __name__ == '__main__':
    import os

    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    import cf_runner

    sys.exit(cf_runner.main(sys.argv))
