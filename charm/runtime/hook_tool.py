#!/usr/bin/env python3
# charmflow hook tools: a thin launcher (stdlib only, Python >= 3.8).
#
# Installed as <rootDir>/runtime/hook_tool.py. install-tools copies it to
# <rootDir>/runtime/hook_tool with `#!<python3> -SE` for its first line and makes
# the symlinks <rootDir>/runtime/bin/<tool> -> ../hook_tool (or ../hook_tool.py
# when it cannot); dispatched on basename(argv[0]). The code lives in
# cf_hook_tool.py next to this file. A script run by path (or through a symlink)
# is compiled on every call; an imported module is loaded from its cached
# bytecode (__pycache__, written by install-tools), so this file stays tiny.
import os
import sys

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    import cf_hook_tool

    sys.exit(cf_hook_tool.main())
