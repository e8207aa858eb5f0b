#!/usr/bin/env python3
# charmflow hook tools: one multi-call program, dispatched on basename(argv[0]).
#
# Installed as <rootDir>/runtime/cf_hook_tool.py, run through the thin launcher
# <rootDir>/runtime/hook_tool.py (symlinks <rootDir>/runtime/bin/<tool> ->
# ../hook_tool, its copy with the interpreter in the shebang line; see runner.py
# install-tools), which imports this module so the code runs from cached bytecode.
#
# Answers from $CHARMFLOW_HOOK_DIR/ctx.json (the controller's HookContext
# snapshot) and records what the hook changes in $CHARMFLOW_HOOK_DIR/changes.json
# and live events in $CHARMFLOW_HOOK_DIR/events.jsonl. The runner turns those
# into the hook's result (charm/hook-protocol.ts).
#
# Syntax and output formats follow Juju's jujuc commands: gnuflag-style flags
# (interspersed, `--` ends them), `--format smart|yaml|json` (smart default),
# exit 2 + `ERROR msg` for bad flags/arguments, exit 1 + `ERROR msg` for runtime
# errors. Stdlib only, Python >= 3.8, few imports (every call costs a process).
import os
import sys

# ---------------------------------------------------------------- JSON (fast)
# `import json` pulls in `re` and `enum` (~10 ms); the C accelerator alone is
# enough for what we do.

class NonFiniteError(ValueError):
    pass


def _no_constant(name):
    # NaN and Infinity are not JSON; a value that reached the controller as one
    # would break its JSON (and Postgres' jsonb).
    raise NonFiniteError('%s is not a valid JSON value' % name)


def _finite_float(text):
    f = float(text)
    if f != f or f in (float('inf'), float('-inf')):
        raise NonFiniteError('%s is out of range for a JSON number' % text)
    return f


try:
    import _json as _cjson

    class _ScanCtx(object):
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = None
        memo = {}

        def __init__(self):
            self.parse_constant = _no_constant
            self.parse_float = _finite_float

    _scanner = _cjson.make_scanner(_ScanCtx())
    _enc_str = _cjson.encode_basestring
    _ws = ' \t\n\r'

    def json_loads(s):
        if isinstance(s, bytes):
            s = s.decode('utf-8')
        i = 0
        n = len(s)
        while i < n and s[i] in _ws:
            i += 1
        try:
            value, end = _scanner(s, i)
        except StopIteration:
            raise ValueError('invalid JSON')
        while end < n and s[end] in _ws:
            end += 1
        if end != n:
            raise ValueError('extra data after JSON value')
        return value
except Exception:  # pragma: no cover - non-CPython
    import json as _json_mod

    def json_loads(s):
        return _json_mod.loads(s, parse_constant=_no_constant, parse_float=_finite_float)

    def _enc_str(s):
        return _json_mod.dumps(s, ensure_ascii=False)


def _go_float_digits(f):
    """Shortest round-trip digits of abs(f): (digits, exp10) with value 0.d1d2.. * 10**exp10."""
    r = repr(abs(f))
    if 'e' in r or 'E' in r:
        mant, e = r.lower().split('e')
        e = int(e)
    else:
        mant, e = r, 0
    if '.' in mant:
        ip, fp = mant.split('.')
    else:
        ip, fp = mant, ''
    digits = (ip + fp).lstrip('0')
    # position of the decimal point relative to the start of ip+fp
    point = len(ip) + e
    lead = len(ip + fp) - len((ip + fp).lstrip('0'))
    point -= lead
    digits = digits.rstrip('0') or '0'
    return digits, point


def go_float_json(f):
    """Format a float the way Go's encoding/json does."""
    if f != f or f in (float('inf'), float('-inf')):
        raise ValueError('unsupported float value')
    if f == 0:
        return '0' if str(f)[0] != '-' else '-0'
    sign = '-' if f < 0 else ''
    a = abs(f)
    digits, point = _go_float_digits(f)
    if a < 1e-6 or a >= 1e21:
        # 'e' format, exponent without leading zero padding beyond 2 digits rule
        exp = point - 1
        mant = digits[0] + ('.' + digits[1:] if len(digits) > 1 else '')
        es = '-' if exp < 0 else '+'
        ed = str(abs(exp))
        if len(ed) < 2 and es == '+':
            ed = '0' + ed
        return sign + mant + 'e' + es + ed
    return sign + _fixed(digits, point)


def _fixed(digits, point):
    if point <= 0:
        return '0.' + '0' * (-point) + digits
    if point >= len(digits):
        return digits + '0' * (point - len(digits))
    return digits[:point] + '.' + digits[point:]


def go_float_g(f):
    """strconv.FormatFloat(f, 'g', -1, 64), as yaml.v2 uses for floats."""
    if f != f:
        return '.nan'
    if f == float('inf'):
        return '.inf'
    if f == float('-inf'):
        return '-.inf'
    if f == 0:
        return '0' if str(f)[0] != '-' else '-0'
    sign = '-' if f < 0 else ''
    digits, point = _go_float_digits(f)
    exp = point - 1
    if exp < -4 or exp >= 6:  # shortest 'g' decides with precision 6
        mant = digits[0] + ('.' + digits[1:] if len(digits) > 1 else '')
        ed = str(abs(exp))
        if len(ed) < 2:
            ed = '0' + ed
        return sign + mant + 'e' + ('-' if exp < 0 else '+') + ed
    return sign + _fixed(digits, point)


class Ordered(dict):
    """A map rendered in insertion order (a Go struct), not sorted (a Go map)."""


class StrList(list):
    """A Go []string: smart format prints it one item per line."""


def _go_json(v, out):
    if v is None:
        out.append('null')
    elif v is True:
        out.append('true')
    elif v is False:
        out.append('false')
    elif isinstance(v, str):
        out.append(_enc_str(v))
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        out.append(go_float_json(v))
    elif isinstance(v, dict):
        keys = list(v) if isinstance(v, Ordered) else sorted(v)
        out.append('{')
        first = True
        for k in keys:
            if not first:
                out.append(',')
            first = False
            out.append(_enc_str(str(k)))
            out.append(':')
            _go_json(v[k], out)
        out.append('}')
    elif isinstance(v, (list, tuple)):
        out.append('[')
        first = True
        for item in v:
            if not first:
                out.append(',')
            first = False
            _go_json(item, out)
        out.append(']')
    else:
        out.append(_enc_str(str(v)))


def go_json(v):
    out = []
    _go_json(v, out)
    s = ''.join(out)
    # Go escapes HTML-sensitive characters and the JS line separators.
    if '<' in s or '>' in s or '&' in s:
        s = s.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    if '\u2028' in s or '\u2029' in s:
        s = s.replace('\u2028', '\\u2028').replace('\u2029', '\\u2029')
    return s


def plain_json(v):
    """Compact JSON for our own files (no Go escaping)."""
    out = []
    _go_json(v, out)
    return ''.join(out)


# ---------------------------------------------------------------- YAML (yaml.v2 style)

_NULLS = ('', '~', 'null', 'Null', 'NULL')
_BOOLS = ('y', 'Y', 'yes', 'Yes', 'YES', 'n', 'N', 'no', 'No', 'NO', 'true', 'True', 'TRUE',
          'false', 'False', 'FALSE', 'on', 'On', 'ON', 'off', 'Off', 'OFF')
_SPECIAL_FLOATS = ('.inf', '.Inf', '.INF', '+.inf', '+.Inf', '+.INF', '-.inf', '-.Inf', '-.INF',
                   '.nan', '.NaN', '.NAN')
_DIG = '0123456789'


def _is_yaml_int(s):
    p = s.replace('_', '')
    if p[:1] in '+-':
        body = p[1:]
    else:
        body = p
    if not body:
        return False
    try:
        if body[:2] in ('0b', '0B'):
            int(body[2:], 2)
        elif body[:2] in ('0x', '0X'):
            int(body[2:], 16)
        elif body[:2] in ('0o', '0O'):
            int(body[2:], 8)
        elif len(body) > 1 and body[0] == '0':
            int(body[1:], 8)
        else:
            if not all(c in _DIG for c in body):
                return False
            int(body)
        return True
    except ValueError:
        return False


def _is_yaml_float(s):
    # ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$
    i = 0
    n = len(s)
    if i < n and s[i] in '+-':
        i += 1
    if i < n and s[i] == '.':
        i += 1
        j = i
        while i < n and s[i] in _DIG:
            i += 1
        if i == j:
            return False
    else:
        j = i
        while i < n and s[i] in _DIG:
            i += 1
        if i == j:
            return False
        if i < n and s[i] == '.':
            i += 1
            while i < n and s[i] in _DIG:
                i += 1
    if i < n and s[i] in 'eE':
        i += 1
        if i < n and s[i] in '+-':
            i += 1
        j = i
        while i < n and s[i] in _DIG:
            i += 1
        if i == j:
            return False
    return i == n


def _is_base60_float(s):
    # ^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$
    i = 0
    n = len(s)
    if i < n and s[i] in '+-':
        i += 1
    if i >= n or s[i] not in _DIG:
        return False
    while i < n and (s[i] in _DIG or s[i] == '_'):
        i += 1
    groups = 0
    while i < n and s[i] == ':':
        i += 1
        j = i
        while i < n and s[i] in _DIG and i - j < 2:
            i += 1
        if i == j or (i - j == 2 and s[j] not in '012345'):
            return False
        groups += 1
    if groups == 0:
        return False
    if i < n and s[i] == '.':
        i += 1
        while i < n and (s[i] in _DIG or s[i] == '_'):
            i += 1
    return i == n


def _digits(s, i, lo, hi):
    """Reads lo..hi digits at i: (value, new_i) or (None, i)."""
    j = i
    while j < len(s) and j - i < hi and s[j] in _DIG:
        j += 1
    if j - i < lo:
        return None, i
    return int(s[i:j]), j


def _is_timestamp(s):
    """yaml.v2 parseTimestamp: 2006-1-2, 2006-1-2[Tt]15:4:5[.9]Z07:00, 2006-1-2 15:4:5[.9]."""
    if len(s) < 5 or not all(c in _DIG for c in s[:4]) or s[4] != '-':
        return False
    year = int(s[:4])
    month, i = _digits(s, 5, 1, 2)
    if month is None or i >= len(s) or s[i] != '-':
        return False
    day, i = _digits(s, i + 1, 1, 2)
    if day is None or not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    mdays = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    if not 1 <= day <= mdays:
        return False
    if i == len(s):
        return True
    sep = s[i]
    if sep not in 'Tt ':
        return False
    hour, i = _digits(s, i + 1, 1, 2)
    if hour is None or i >= len(s) or s[i] != ':':
        return False
    minute, i = _digits(s, i + 1, 1, 2)
    if minute is None or i >= len(s) or s[i] != ':':
        return False
    sec, i = _digits(s, i + 1, 1, 2)
    if sec is None or hour > 23 or minute > 59 or sec > 59:
        return False
    if i < len(s) and s[i] == '.':
        j = i + 1
        while j < len(s) and s[j] in _DIG:
            j += 1
        if j == i + 1:
            return False
        i = j
    if sep == ' ':
        return i == len(s)
    rest = s[i:]
    if rest == 'Z':
        return True
    if len(rest) == 6 and rest[0] in '+-' and rest[3] == ':' and rest[1:3].isdigit() and rest[4:].isdigit():
        return True
    return False


def _resolves_non_str(s):
    if s in _NULLS or s in _BOOLS or s in _SPECIAL_FLOATS:
        return True
    c = s[0]
    if c in '+-.0123456789':
        if _is_yaml_int(s) or _is_yaml_float(s) or _is_base60_float(s):
            return True
        if _is_timestamp(s):
            return True
    return False


def _printable(ch):
    # yaml.v2's is_printable: no NEL, no BOM, nothing outside the BMP
    o = ord(ch)
    return (o == 0x0A or 0x20 <= o <= 0x7E or (0xA0 <= o <= 0xD7FF)
            or (0xE000 <= o <= 0xFFFD and o != 0xFEFF))


def _analyze(s):
    """Returns (block_plain_ok, single_ok, block_ok) as yaml.v2's emitter decides."""
    if not s:
        return False, True, False
    block_ind = False
    line_breaks = special = False
    leading_space = leading_break = trailing_space = trailing_break = False
    break_space = space_break = False
    prev_space = prev_break = False
    if s.startswith('---') or s.startswith('...'):
        block_ind = True
    preceded_ws = True
    n = len(s)
    for i, ch in enumerate(s):
        nxt = s[i + 1] if i + 1 < n else ''
        followed_ws = nxt in ('', ' ', '\t', '\n', '\r', '\x85', '\u2028', '\u2029')
        if i == 0:
            if ch in '#,[]{}&*!|>\'"%@`':
                block_ind = True
            elif ch in '?:':
                if followed_ws:
                    block_ind = True
            elif ch == '-':
                if followed_ws:
                    block_ind = True
        else:
            if ch == ':':
                if followed_ws:
                    block_ind = True
            elif ch == '#':
                if preceded_ws:
                    block_ind = True
        if not _printable(ch) or ch == '\ufeff':
            special = True
        if ch in '\n\r\x85\u2028\u2029':
            line_breaks = True
        if ch == ' ':
            if i == 0:
                leading_space = True
            if i == n - 1:
                trailing_space = True
            if prev_break:
                break_space = True
            prev_space = True
            prev_break = False
        elif ch in '\n\r\x85\u2028\u2029':
            if i == 0:
                leading_break = True
            if i == n - 1:
                trailing_break = True
            if prev_space:
                space_break = True
            prev_break = True
            prev_space = False
        else:
            prev_space = prev_break = False
        preceded_ws = ch in (' ', '\t', '\n', '\r', '\x85', '\u2028', '\u2029')
    plain_ok = True
    single_ok = True
    block_ok = True
    if leading_space or leading_break or trailing_space or trailing_break:
        plain_ok = False
    if trailing_space:
        block_ok = False
    if break_space:
        plain_ok = False
        single_ok = False
    if space_break or special:
        plain_ok = single_ok = block_ok = False
    if line_breaks:
        plain_ok = False
    if block_ind:
        plain_ok = False
    return plain_ok, single_ok, block_ok


_WIDTH = 80


class _Line(object):
    __slots__ = ('parts', 'col')


def _fold(s, col, indent, quote_mode, out_lines, cur):
    """Write s starting at column col, folding at spaces past 80 columns."""
    spaces = False
    breaks = False
    n = len(s)
    buf = cur
    for i, ch in enumerate(s):
        if quote_mode == 'single' and ch in _BREAKS:
            # a line break inside single quotes is written as is, and the
            # next line starts at the indentation
            buf.append(ch)
            col = 0
            breaks = True
            continue
        if breaks:
            buf.append(' ' * indent)
            col = indent
            breaks = False
        if ch == ' ':
            nxt_space = i + 1 < n and s[i + 1] == ' '
            if quote_mode == 'plain':
                brk = not spaces and col > _WIDTH and not nxt_space
            elif quote_mode == 'single':
                brk = not spaces and col > _WIDTH and 0 < i < n - 1 and not nxt_space
            else:
                brk = not spaces and col > _WIDTH and 0 < i < n - 1
            if brk:
                out_lines.append(''.join(buf))
                buf = [' ' * indent]
                col = indent
                if quote_mode == 'double' and nxt_space:
                    buf.append('\\')
                    col += 1
            else:
                buf.append(' ')
                col += 1
            spaces = True
        else:
            if quote_mode == 'double':
                e = _dq_escape(ch)
                buf.append(e)
                col += len(e)
            elif quote_mode == 'single' and ch == "'":
                buf.append("''")
                col += 2
            else:
                buf.append(ch)
                col += 1
            spaces = False
    return buf, col


_BREAKS = ('\r', '\x85', '\u2028', '\u2029')

_DQ = {'\0': '\\0', '\a': '\\a', '\b': '\\b', '\t': '\\t', '\n': '\\n', '\v': '\\v', '\f': '\\f',
       '\r': '\\r', '\x1b': '\\e', '"': '\\"', '\\': '\\\\', '\x85': '\\N', '\xa0': '\\_',
       '\u2028': '\\L', '\u2029': '\\P'}


def _dq_escape(ch):
    e = _DQ.get(ch)
    if e is not None:
        return e
    if _printable(ch) and ch != '\ufeff':
        return ch
    o = ord(ch)
    if o <= 0xFF:
        return '\\x%02X' % o
    if o <= 0xFFFF:
        return '\\u%04X' % o
    return '\\U%08X' % o


def _scalar_text(v):
    """Returns (text, style) for a scalar value: style in plain|single|double|literal."""
    if v is None:
        return 'null', 'plain'
    if v is True:
        return 'true', 'plain'
    if v is False:
        return 'false', 'plain'
    if isinstance(v, int):
        return str(v), 'plain'
    if isinstance(v, float):
        return go_float_g(v), 'plain'
    s = str(v)
    plain_ok, single_ok, block_ok = _analyze(s)
    if '\n' in s:
        style = 'literal' if block_ok else 'double'
    elif s and not _resolves_non_str(s) and not _is_base60_float(s):
        style = 'plain'
        if not plain_ok:
            style = 'single' if single_ok else 'double'
    else:
        style = 'double'
    return s, style


def _emit_scalar(v, prefix, indent, lines, simple_key=False):
    """Append the lines for scalar v after prefix; continuation lines at `indent`."""
    s, style = _scalar_text(v)
    if style == 'literal':
        if s.endswith('\n'):
            chomp = '+' if s.endswith('\n\n') or s == '\n' else ''
        else:
            chomp = '-'
        hint = '2' if s[:1] in (' ', '\n') else ''
        lines.append(prefix + '|' + hint + chomp)
        body = s[:-1] if s.endswith('\n') else s
        for ln in body.split('\n'):
            lines.append((' ' * indent + ln) if ln else '')
        return
    if style == 'plain':
        buf, _ = _fold(s, len(prefix), indent, 'plain', lines, [prefix]) if not simple_key else ([prefix, s], 0)
        lines.append(''.join(buf))
    elif style == 'single':
        if simple_key:
            lines.append(prefix + "'" + s.replace("'", "''") + "'")
            return
        buf, _ = _fold(s, len(prefix) + 1, indent, 'single', lines, [prefix, "'"])
        buf.append("'")
        lines.append(''.join(buf))
    else:
        if simple_key:
            lines.append(prefix + '"' + ''.join(_dq_escape(c) for c in s) + '"')
            return
        buf, _ = _fold(s, len(prefix) + 1, indent, 'double', lines, [prefix, '"'])
        buf.append('"')
        lines.append(''.join(buf))


def _key_text(k):
    lines = []
    _emit_scalar(k, '', 0, lines, simple_key=True)
    return lines[0]


def _cmp_go_keys(a, b):
    """yaml.v2's keyList.Less, for string keys (natural order of digit runs)."""
    ar, br = a, b
    for i in range(min(len(ar), len(br))):
        if ar[i] == br[i]:
            continue
        al = ar[i].isalpha()
        bl = br[i].isalpha()
        if al and bl:
            return -1 if ar[i] < br[i] else 1
        if al or bl:
            return -1 if bl else 1
        an = bn = 0
        if ar[i] == '0' or br[i] == '0':
            j = i - 1
            while j >= 0 and ar[j].isdigit():
                if ar[j] != '0':
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(ar) and ar[ai].isdigit():
            an = an * 10 + int(ar[ai])
            ai += 1
        bi = i
        while bi < len(br) and br[bi].isdigit():
            bn = bn * 10 + int(br[bi])
            bi += 1
        if an != bn:
            return -1 if an < bn else 1
        if ai != bi:
            return -1 if ai < bi else 1
        return -1 if ar[i] < br[i] else 1
    if len(ar) == len(br):
        return 0
    return -1 if len(ar) < len(br) else 1


def _sorted_keys(d):
    if isinstance(d, Ordered):
        return list(d)
    import functools
    return sorted(d, key=functools.cmp_to_key(lambda a, b: _cmp_go_keys(str(a), str(b))))


def _emit_map(d, indent, lead, lines):
    for i, k in enumerate(_sorted_keys(d)):
        v = d[k]
        prefix = (lead if i == 0 else ' ' * indent) + _key_text(k) + ':'
        if isinstance(v, dict) and v:
            lines.append(prefix)
            _emit_map(v, indent + 2, ' ' * (indent + 2), lines)
        elif isinstance(v, (list, tuple)) and v:
            lines.append(prefix)
            _emit_seq(v, indent, ' ' * indent, lines)
        elif isinstance(v, dict):
            lines.append(prefix + ' {}')
        elif isinstance(v, (list, tuple)):
            lines.append(prefix + ' []')
        else:
            _emit_scalar(v, prefix + ' ', indent + 2, lines)


def _emit_seq(seq, indent, lead, lines):
    for i, v in enumerate(seq):
        prefix = (lead if i == 0 else ' ' * indent) + '- '
        if isinstance(v, dict) and v:
            _emit_map(v, indent + 2, prefix, lines)
        elif isinstance(v, (list, tuple)) and v:
            _emit_seq(v, indent + 2, prefix, lines)
        elif isinstance(v, dict):
            lines.append(prefix + '{}')
        elif isinstance(v, (list, tuple)):
            lines.append(prefix + '[]')
        else:
            _emit_scalar(v, prefix, indent + 2, lines)


def to_yaml(v):
    """gopkg.in/yaml.v2 Marshal, trailing newlines trimmed to one (cmd.FormatYaml)."""
    if v is None:
        return ''
    lines = []
    if isinstance(v, dict):
        if v:
            _emit_map(v, 0, '', lines)
        else:
            lines.append('{}')
    elif isinstance(v, (list, tuple)):
        if v:
            _emit_seq(v, 0, '', lines)
        else:
            lines.append('[]')
    else:
        _emit_scalar(v, '', 2, lines)
    text = '\n'.join(lines).rstrip('\n')
    return text + '\n' if text else ''


def format_value(v, fmt):
    if fmt == 'json':
        return go_json(v) + '\n'
    if fmt == 'yaml':
        return to_yaml(v)
    # smart
    if v is None:
        return ''
    if isinstance(v, str):
        return v + '\n' if v else ''
    if isinstance(v, StrList):
        s = '\n'.join(v)
        return s + '\n' if s else ''
    if v is True:
        return 'True\n'
    if v is False:
        return 'False\n'
    return to_yaml(v)


# ---------------------------------------------------------------- YAML input
# relation-set/state-set --file: ops 3 sends JSON, ops 2 sends yaml.safe_dump
# output, classic charms hand-written YAML. Juju unmarshals it into a
# map[string]string: a block (or empty flow) mapping of scalars, where a plain
# scalar keeps its text and null becomes "". Quoted, multi-line and block
# scalars are all supported.

_YAML_ESC = {'0': '\0', 'a': '\a', 'b': '\b', 't': '\t', '\t': '\t', 'n': '\n', 'v': '\v', 'f': '\f',
             'r': '\r', 'e': '\x1b', ' ': ' ', '"': '"', '/': '/', '\\': '\\', 'N': '\x85',
             '_': '\xa0', 'L': '\u2028', 'P': '\u2029'}


def _fold_lines(lines):
    """Flow scalar line folding: a break before a content line -> space, n empty
    lines in between -> n newlines. The last line counts as content even if empty."""
    out = lines[0] if lines else ''
    blanks = 0
    last = len(lines) - 1
    for k in range(1, len(lines)):
        ln = lines[k]
        if ln == '' and k != last:
            blanks += 1
            continue
        out += ('\n' * blanks) if blanks else ' '
        out += ln
        blanks = 0
    return out


def _yaml_double(body, lines_after):
    """Parse a double-quoted scalar starting after the opening quote.
    body: rest of the first line; lines_after: iterator over following lines.
    Returns (value, rest_of_last_line)."""
    out = []
    line = body
    pending_break = False
    blanks = 0
    while True:
        i = 0
        n = len(line)
        if pending_break:
            line = line.lstrip(' \t')
            n = len(line)
            if n == 0:
                blanks += 1
                try:
                    line = next(lines_after)
                except StopIteration:
                    raise ValueError('unterminated double-quoted string')
                continue
            if pending_break == 'fold':
                out.append('\n' * blanks if blanks else ' ')
            else:  # escaped break: join directly
                out.append('\n' * blanks)
            pending_break = False
            blanks = 0
        seg = []
        keep = 0  # chars of seg produced by escapes: never trimmed
        while i < n:
            c = line[i]
            if c == '"':
                # trailing whitespace before a break was trimmed; none here
                out.append(''.join(seg))
                return ''.join(out), line[i + 1:]
            if c == '\\':
                if i + 1 >= n:
                    out.append(''.join(seg))
                    seg = []
                    pending_break = 'escaped'
                    i += 1
                    break
                e = line[i + 1]
                if e in _YAML_ESC:
                    seg.append(_YAML_ESC[e])
                    keep = len(seg)
                    i += 2
                elif e in 'xuU':
                    width = {'x': 2, 'u': 4, 'U': 8}[e]
                    hexs = line[i + 2:i + 2 + width]
                    if len(hexs) != width:
                        raise ValueError('bad escape in double-quoted string')
                    seg.append(chr(int(hexs, 16)))
                    keep = len(seg)
                    i += 2 + width
                else:
                    raise ValueError('unknown escape \\%s' % e)
                continue
            seg.append(c)
            i += 1
        if pending_break != 'escaped':
            out.append(''.join(seg[:keep]) + ''.join(seg[keep:]).rstrip(' \t'))
            pending_break = 'fold'
        try:
            line = next(lines_after)
        except StopIteration:
            raise ValueError('unterminated double-quoted string')


def _yaml_single(body, lines_after):
    parts = []
    line = body
    while True:
        j = 0
        seg = []
        while j < len(line):
            c = line[j]
            if c == "'":
                if line[j + 1:j + 2] == "'":
                    seg.append("'")
                    j += 2
                    continue
                parts.append(''.join(seg))
                last = len(parts) - 1
                trimmed = []
                for k, p in enumerate(parts):
                    if k:
                        p = p.lstrip(' \t')
                    if k != last:
                        p = p.rstrip(' \t')
                    trimmed.append(p)
                return _fold_lines(trimmed), line[j + 1:]
            seg.append(c)
            j += 1
        parts.append(''.join(seg))
        try:
            line = next(lines_after)
        except StopIteration:
            raise ValueError('unterminated single-quoted string')


class _Lines(object):
    def __init__(self, lines):
        self.lines = lines
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.i >= len(self.lines):
            raise StopIteration
        ln = self.lines[self.i]
        self.i += 1
        return ln

    def peek(self):
        return self.lines[self.i] if self.i < len(self.lines) else None


def _strip_comment(s):
    k = s.find(' #')
    if s.startswith('#'):
        return ''
    return s[:k] if k >= 0 else s


def _yaml_key(line):
    """Returns (key, rest after the ':')."""
    if line[:1] in ('"', "'"):
        it = _Lines([])
        if line[0] == '"':
            key, rest = _yaml_double(line[1:], it)
        else:
            key, rest = _yaml_single(line[1:], it)
        rest = rest.lstrip(' \t')
        if not rest.startswith(':'):
            raise ValueError('expected ":" after a quoted key')
        return key, rest[1:]
    j = 0
    while True:
        k = line.find(':', j)
        if k < 0:
            raise ValueError('cannot parse settings: expected "key: value", got %r' % line)
        if k + 1 == len(line) or line[k + 1] in ' \t':
            return line[:k].rstrip(), line[k + 1:]
        j = k + 1


def _block_scalar(header, lines):
    h = _strip_comment(header).strip()
    style = h[0]
    chomp = ''
    indent = 0
    for c in h[1:]:
        if c in '+-':
            chomp = c
        elif c.isdigit():
            indent = int(c)
        else:
            raise ValueError('bad block scalar header %r' % header)
    body = []
    while True:
        nxt = lines.peek()
        if nxt is None:
            break
        if nxt.strip() == '':
            body.append(nxt)
            next(lines)
            continue
        ind = len(nxt) - len(nxt.lstrip(' '))
        if ind == 0:
            break
        if not indent:
            indent = ind
        if ind < indent:
            break
        body.append(nxt)
        next(lines)
    if not indent:
        indent = 1
    content = [b[indent:] if len(b) >= indent else '' for b in body]
    trailing = 0
    while content and content[-1].strip() == '':
        content.pop()
        trailing += 1
    if style == '|':
        text = '\n'.join(content)
    else:
        text = ''
        prev_more = True
        for k, ln in enumerate(content):
            more = ln[:1] in (' ', '\t') or ln == ''
            if k == 0:
                text = ln
            elif ln == '':
                text += '\n'
            elif more or prev_more and content[k - 1] == '':
                text += ('\n' if not text.endswith('\n') or more else '') + ln
            else:
                text += ' ' + ln
            prev_more = more
    if not content:
        return '\n' * trailing if chomp == '+' else ''
    if chomp == '-':
        return text
    if chomp == '+':
        return text + '\n' + '\n' * trailing
    return text + '\n'


def _plain_value(first, lines):
    parts = [_strip_comment(first).strip()]
    while True:
        nxt = lines.peek()
        if nxt is None:
            break
        if nxt.strip() == '':
            parts.append('')
            next(lines)
            continue
        if nxt[:1] not in (' ', '\t'):
            break
        stripped = nxt.strip()
        if stripped.startswith('#'):
            next(lines)
            break
        parts.append(_strip_comment(stripped).strip())
        next(lines)
    while len(parts) > 1 and parts[-1] == '':
        parts.pop()
    value = _fold_lines(parts)
    if value in _NULLS:
        return ''
    return value


def parse_settings_text(text):
    """Parse a --file payload into a flat {str: str} map (see above)."""
    t = text.strip()
    if not t:
        return {}
    if t[0] in '{[':
        try:
            data = json_loads(t)
        except NonFiniteError as e:
            raise ValueError('cannot parse settings: %s' % e)  # not to be read again as YAML strings
        except Exception:
            data = _flow_mapping(t)
        if not isinstance(data, dict):
            raise ValueError('cannot parse settings: expected a map')
        return dict((str(k), _stringify(v)) for k, v in data.items())
    result = {}
    lines = _Lines(text.replace('\r\n', '\n').split('\n'))
    for line in lines:
        if not line.strip() or line.lstrip().startswith('#') or line.rstrip() in ('---', '...'):
            continue
        if line[0] in ' \t':
            raise ValueError('cannot parse settings: unexpected indentation: %r' % line)
        key, rest = _yaml_key(line)
        r = rest.lstrip(' \t')
        if r[:1] in ('|', '>'):
            value = _block_scalar(r, lines)
        elif r[:1] == '"':
            value, after = _yaml_double(r[1:], lines)
            if _strip_comment(after).strip():
                raise ValueError('cannot parse settings: unexpected text after a quoted value')
        elif r[:1] == "'":
            value, after = _yaml_single(r[1:], lines)
            if _strip_comment(after).strip():
                raise ValueError('cannot parse settings: unexpected text after a quoted value')
        elif r[:1] in ('[', '{') and _strip_comment(r).strip() not in ('[]', '{}'):
            raise ValueError('cannot parse settings: value of %r is not a string' % key)
        else:
            nxt = lines.peek()
            if not _strip_comment(r).strip() and nxt is not None and nxt.lstrip().startswith(('- ', '-\t')) \
                    or (nxt is not None and nxt[:1] == ' ' and _yaml_looks_nested(nxt)
                        and not _strip_comment(r).strip()):
                raise ValueError('cannot parse settings: value of %r is not a string' % key)
            value = _plain_value(r, lines)
        result[str(key)] = value
    return result


def _flow_mapping(text):
    """A flow mapping of scalars: {a: b, 'c': "d", e: }."""
    t = text.strip()
    if not (t.startswith('{') and t.endswith('}')):
        raise ValueError('cannot parse settings: expected a map')
    body = t[1:-1]
    result = {}
    i = 0
    n = len(body)

    def scalar(i, stop):
        while i < n and body[i] in ' \t\n':
            i += 1
        if i < n and body[i] in '"\'':
            it = _Lines(body[i + 1:].split('\n'))
            first = next(it)
            val, rest = (_yaml_double if body[i] == '"' else _yaml_single)(first, it)
            remaining = '\n'.join([rest] + it.lines[it.i:])
            return val, n - len(remaining), True
        j = i
        while j < n and body[j] not in stop and not (body[j] == ':' and (j + 1 == n or body[j + 1] in ' \t\n,}')):
            j += 1
        raw = ' '.join(body[i:j].split())
        return raw, j, False

    while i < n:
        while i < n and body[i] in ' \t\n,':
            i += 1
        if i >= n:
            break
        key, i, _ = scalar(i, ',')
        while i < n and body[i] in ' \t\n':
            i += 1
        value = ''
        if i < n and body[i] == ':':
            value, i, quoted = scalar(i + 1, ',')
            if not quoted and value in _NULLS:
                value = ''
        while i < n and body[i] in ' \t\n':
            i += 1
        if i < n and body[i] != ',':
            raise ValueError('cannot parse settings: bad flow mapping')
        result[key] = value
    return result


def _yaml_looks_nested(line):
    s = line.strip()
    try:
        _yaml_key(s)
        return True
    except ValueError:
        return False


def _stringify(v):
    if v is None:
        return ''
    if v is True:
        return 'true'
    if v is False:
        return 'false'
    if isinstance(v, float):
        return go_float_g(v)
    if isinstance(v, (dict, list)):
        return go_json(v)
    return str(v)


# ---------------------------------------------------------------- errors and flags

class UsageError(Exception):
    """Bad flags or arguments: exit 2."""


class ToolError(Exception):
    """Runtime error: exit 1."""


class Help(Exception):
    pass


def _parse_bool(val, flag):
    if val in ('1', 't', 'T', 'TRUE', 'true', 'True'):
        return True
    if val in ('0', 'f', 'F', 'FALSE', 'false', 'False'):
        return False
    raise UsageError('invalid value %s for option %s: strconv.ParseBool: parsing %s: invalid syntax'
                     % (_q(val), flag, _q(val)))


def _q(s):
    """Go's %q."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == '\\':
            out.append('\\\\')
        elif ch == '\n':
            out.append('\\n')
        elif ch == '\t':
            out.append('\\t')
        elif ch == '\r':
            out.append('\\r')
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append('\\x%02x' % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return ''.join(out)


def parse_args(args, spec):
    """gnuflag-like parsing. spec: {flagname: (kind, dest)} with kind 'bool' or 'str'
    or a callable(value, flag) -> parsed. Returns (opts, positional)."""
    opts = {}
    pos = []
    i = 0
    n = len(args)
    while i < n:
        a = args[i]
        i += 1
        if a == '--':
            pos.extend(args[i:])
            break
        if len(a) < 2 or a[0] != '-':
            pos.append(a)
            continue
        body = a[2:] if a.startswith('--') else a[1:]
        if '=' in body:
            name, val = body.split('=', 1)
            has_val = True
        else:
            name, val, has_val = body, None, False
        flag = a.split('=', 1)[0]
        if name in ('help', 'h'):
            raise Help()
        if name not in spec:
            raise UsageError('option provided but not defined: %s' % flag)
        kind, dest = spec[name]
        if kind == 'bool':
            opts[dest] = _parse_bool(val, flag) if has_val else True
            continue
        if not has_val:
            if i >= n:
                raise UsageError('option needs an argument: %s' % flag)
            val = args[i]
            i += 1
        if kind == 'str':
            opts[dest] = val
        else:
            try:
                opts[dest] = kind(val)
            except UsageError as e:
                raise UsageError('invalid value %s for option %s: %s' % (_q(val), flag, e))
    return opts, pos


def check_empty(args):
    if args:
        raise UsageError('unrecognized args: [%s]' % ' '.join(_q(a) for a in args))


def _format_kind(val):
    if val not in ('smart', 'yaml', 'json'):
        raise UsageError('unknown format %s' % _q(val))
    return val


FORMAT_FLAGS = {'format': (_format_kind, 'format'), 'o': ('str', 'output'), 'output': ('str', 'output')}


def keyvalues(args):
    """juju/utils keyvalues.Parse(args, allowEmptyValues=true)."""
    result = {}
    order = []
    for a in args:
        if '=' not in a:
            raise UsageError('expected "key=value", got %s' % _q(a))
        k, v = a.split('=', 1)
        if not k:
            raise UsageError('expected "key=value", got %s' % _q(a))
        if k in result:
            raise UsageError('key %s specified more than once' % _q(k))
        result[k] = v
        order.append(k)
    return result


# ---------------------------------------------------------------- context and state

class Ctx(object):
    def __init__(self, hook_dir):
        self.dir = hook_dir
        try:
            with open(os.path.join(hook_dir, 'ctx.json'), 'rb') as f:
                data = f.read()
        except (OSError, IOError) as e:
            raise ToolError('cannot read hook context: %s' % e)
        if not data:
            # emptied by the runner once the hook's result was recorded
            raise ToolError('cannot read hook context: the hook has ended')
        self.c = json_loads(data)
        self._changes = None

    def get(self, key, default=None):
        v = self.c.get(key)
        return default if v is None else v

    @property
    def unit(self):
        return self.c['unit']

    @property
    def app(self):
        return self.c['application']

    @property
    def is_leader(self):
        return bool(self.c.get('isLeader'))

    def changes(self):
        if self._changes is None:
            self._changes = read_changes(self.dir)
        return self._changes

    def hook_relation(self):
        r = self.c.get('relation')
        if r is None:
            return None
        return self.relation(r.get('id'))

    def relation(self, rid):
        for r in self.c.get('relations') or ():
            if r.get('id') == rid:
                return r
        return None

    def relation_value(self, val):
        """Parse a -r value: `endpoint:N` or `N`."""
        trim = val
        k = trim.rfind(':')
        if k >= 0:
            trim = trim[k + 1:]
        try:
            if not trim or not (trim.isdigit() or (trim[0] in '+-' and trim[1:].isdigit())):
                raise ValueError()
            rid = int(trim)
        except ValueError:
            raise UsageError('invalid relation id')
        r = self.relation(rid)
        if r is None or (k > 0 and val[:k] != r.get('endpoint')):
            raise UsageError('relation not found')
        return rid

    def emit(self, event):
        import time
        event['ts'] = int(time.time() * 1000)
        # type first, for humans reading events.jsonl
        ev = Ordered()
        ev['type'] = event.pop('type')
        ev.update(event)
        line = (plain_json(ev) + '\n').encode('utf-8', 'replace')
        fd = os.open(os.path.join(self.dir, 'events.jsonl'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def update_changes(self, fn):
        """Read-modify-write changes.json under an exclusive flock."""
        import fcntl
        lock_fd = os.open(os.path.join(self.dir, 'changes.lock'), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            ch = read_changes(self.dir)
            fn(ch)
            path = os.path.join(self.dir, 'changes.json')
            tmp = path + '.tmp.%d' % os.getpid()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, plain_json(ch).encode('utf-8'))
            finally:
                os.close(fd)
            os.rename(tmp, path)
            self._changes = ch
        finally:
            os.close(lock_fd)


def read_changes(hook_dir):
    try:
        with open(os.path.join(hook_dir, 'changes.json'), 'rb') as f:
            data = f.read()
        ch = json_loads(data) if data.strip() else {}
    except (OSError, IOError):
        ch = {}
    return ch


def _apply(base, delta):
    out = dict(base or {})
    for k, v in (delta or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _rel_changes(ch, rid, scope):
    return ((ch.get('relationSettings') or {}).get(str(rid)) or {}).get(scope) or {}


# ---------------------------------------------------------------- output helper

class Out(object):
    def __init__(self, opts):
        self.fmt = opts.get('format', 'smart')
        self.path = opts.get('output')

    def write(self, value):
        text = format_value(value, self.fmt)
        if self.path:
            with open(self.path, 'w') as f:
                f.write(text)
        elif text:
            sys.stdout.write(text)


def _stdin_or_file(path):
    try:
        if path == '-':
            data = sys.stdin.buffer.read()
        else:
            with open(path, 'rb') as f:
                data = f.read()
    except (OSError, IOError) as e:
        raise ToolError('%s' % e)
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise ToolError('%s is not valid UTF-8 (byte %d)' % ('stdin' if path == '-' else _q(path), e.start))


# ---------------------------------------------------------------- tools

USAGE = {
    'juju-log': ('[options] <message>', 'write a message to the juju log'),
    'is-leader': ('[options]', 'print application leadership status'),
    'config-get': ('[options] [<key>]', 'print application configuration'),
    'relation-ids': ('[options] <name>', 'list all relation ids with the given relation name'),
    'relation-list': ('[options]', 'list relation units'),
    'relation-get': ('[options] <key> <unit id>', 'get relation settings'),
    'relation-set': ('[options] key=value [key=value ...]', 'set relation settings'),
    'relation-model-get': ('[options]', 'get details about the model hosing a related application'),
    'status-get': ('[options] [--include-data] [--application]', 'print status information'),
    'status-set': ('[options] <maintenance | blocked | waiting | active> [message]', 'set status information'),
    'application-version-set': ('<new-version>', 'specify which version of the application is deployed'),
    'leader-get': ('[options] [<key>]', 'print application leadership settings'),
    'leader-set': ('<key>=<value> [...]', 'write application leadership settings'),
    'action-get': ('[options] [<key>[.<key>.<key>...]]', 'get action parameters'),
    'action-set': ('<key>=<value> [<key>=<value> ...]', 'set action results'),
    'action-fail': ('["<failure message>"]', 'set action fail status with message'),
    'action-log': ('<message>', 'record a progress message for the current action'),
    'open-port': ('<port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp', 'register a port or range to open'),
    'close-port': ('<port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp', 'ensure a port or range is always closed'),
    'opened-ports': ('[options]', 'list all ports or port ranges opened by the unit'),
    'network-get': ('[options] <binding-name> [--ingress-address] [--bind-address] [--egress-subnets]', 'get network config'),
    'unit-get': ('[options] <setting>', 'print public-address or private-address'),
    'goal-state': ('[options]', 'print the status of the charm\'s peers and related units'),
    'state-get': ('[options] [<key>]', 'print server-side-state value'),
    'state-set': ('[options] key=value [key=value ...]', 'set server-side-state values'),
    'state-delete': ('<key>', 'delete server-side-state key value pairs'),
    'secret-add': ('[options] [key[#base64|#file]=value...]', 'add a new secret'),
    'secret-set': ('[options] <ID> [key[#base64|#file]=value...]', 'update an existing secret'),
    'secret-get': ('[options] <ID> [key[#base64]]', 'get the content of a secret'),
    'secret-info-get': ('[options] <ID>', 'get a secret\'s metadata info'),
    'secret-ids': ('[options]', 'print secret IDs'),
    'secret-remove': ('[options] <ID>', 'remove a existing secret'),
    'secret-grant': ('[options] <ID>', 'grant access to a secret'),
    'secret-revoke': ('[options] <ID>', 'revoke access to a secret'),
}


def tool_juju_log(ctx, args):
    opts, pos = parse_args(args, {'debug': ('bool', 'debug'), 'l': ('str', 'level'),
                                  'log-level': ('str', 'level'), 'format': ('str', 'format')})
    if not pos:
        raise UsageError('no message specified')
    if opts.get('format'):
        sys.stderr.write('--format flag deprecated for command "juju-log"')
    level = 'INFO'
    if opts.get('debug'):
        level = 'DEBUG'
    elif opts.get('level'):
        lv = opts['level'].strip().upper()
        if lv == 'WARN':
            lv = 'WARNING'
        if lv in ('TRACE', 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'):
            level = lv
    prefix = ''
    r = ctx.hook_relation()
    if r is not None:
        prefix = '%s:%d: ' % (r['endpoint'], r['id'])
    ctx.emit({'type': 'log', 'level': level, 'message': prefix + ' '.join(pos)})


def tool_is_leader(ctx, args):
    opts, pos = parse_args(args, FORMAT_FLAGS)
    check_empty(pos)
    Out(opts).write(ctx.is_leader)


def tool_config_get(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['a'] = ('bool', 'all')
    spec['all'] = ('bool', 'all')
    opts, pos = parse_args(args, spec)
    key = ''
    if pos:
        key = pos[0]
        if key and opts.get('all'):
            raise UsageError('cannot use argument --all together with key %s' % _q(key))
        check_empty(pos[1:])
    config = ctx.get('config', {})
    if key:
        Out(opts).write(config.get(key))
    else:
        Out(opts).write(dict((k, v) for k, v in config.items() if v is not None))


def _relation_flag(ctx):
    return (ctx.relation_value, 'rid')


def _default_rid(ctx, opts):
    rid = opts.get('rid')
    if rid is None:
        r = ctx.c.get('relation')
        if r is None:
            raise UsageError('no relation id specified')
        rid = r.get('id')
    return rid


def tool_relation_ids(ctx, args):
    opts, pos = parse_args(args, FORMAT_FLAGS)
    r = ctx.hook_relation()
    name = r['endpoint'] if r is not None else ''
    if pos:
        name = pos[0]
        check_empty(pos[1:])
    elif not name:
        raise UsageError('no relation name specified')
    ids = sorted('%s:%d' % (rel['endpoint'], rel['id'])
                 for rel in ctx.get('relations', []) if rel.get('endpoint') == name)
    Out(opts).write(StrList(ids))


def _unit_sort_key(u):
    app, _, num = u.partition('/')
    try:
        return (app, int(num), u)
    except ValueError:
        return (app, -1, u)


def tool_relation_list(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['r'] = spec['relation'] = _relation_flag(ctx)
    spec['app'] = ('bool', 'app')
    opts, pos = parse_args(args, spec)
    rid = _default_rid(ctx, opts)
    check_empty(pos)
    rel = ctx.relation(rid)
    if opts.get('app'):
        Out(opts).write(rel.get('remoteApplication', ''))
        return
    Out(opts).write(StrList(sorted(rel.get('units') or [], key=_unit_sort_key)))


def _own_bag(ctx, rel, app):
    data = rel.get('data') or {}
    ch = ctx.changes()
    if app:
        return _apply(data.get(ctx.app), _rel_changes(ch, rel['id'], 'app'))
    return _apply(data.get(ctx.unit), _rel_changes(ch, rel['id'], 'unit'))


def tool_relation_get(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['r'] = spec['relation'] = _relation_flag(ctx)
    spec['app'] = ('bool', 'app')
    opts, pos = parse_args(args, spec)
    rid = _default_rid(ctx, opts)
    app = bool(opts.get('app'))
    key = ''
    if pos:
        key = pos.pop(0)
        if key == '-':
            key = ''
    hr = ctx.c.get('relation') or {}
    hook_rel = hr.get('id') == rid
    if pos:
        target = pos.pop(0)
        if app and '/' in target:
            target = target.split('/', 1)[0]
    elif app:
        target = hr.get('remoteApp') if hook_rel else None
        if not target and hook_rel and hr.get('remoteUnit'):
            target = hr['remoteUnit'].split('/', 1)[0]
        if not target:
            raise UsageError('no unit or application specified')
    else:
        target = hr.get('remoteUnit') if hook_rel else None
        if not target:
            target = hr.get('remoteApp') if hook_rel else None
            if target:
                app = True
            else:
                raise UsageError('no unit or application specified')
    check_empty(pos)
    rel = ctx.relation(rid)
    data = rel.get('data') or {}
    fake = '%s:%d' % (rel['endpoint'], rel['id'])
    if not app and target == ctx.unit:
        settings = _own_bag(ctx, rel, False)
    elif app and target == ctx.app:
        if ctx.is_leader:
            settings = _own_bag(ctx, rel, True)
        elif rel.get('role') == 'peer':
            settings = dict(data.get(target) or {})
        else:
            raise ToolError('permission denied')
    elif app:
        if target != rel.get('remoteApplication') and target not in data:
            raise ToolError('cannot read settings for application %s in relation %s: application %s not found'
                            % (_q(target), _q(fake), _q(target)))
        settings = dict(data.get(target) or {})
    else:
        if '/' not in target:
            raise ToolError('cannot read settings for unit %s in relation %s: %s is not a valid unit name'
                            % (_q(target), _q(fake), _q(target)))
        if target not in data and target not in (rel.get('units') or ()):
            raise ToolError('cannot read settings for unit %s in relation %s: unit %s: settings not found'
                            % (_q(target), _q(fake), _q(target)))
        settings = dict(data.get(target) or {})
    out = Out(opts)
    if key:
        out.write(settings.get(key))
    else:
        out.write(settings)


def tool_relation_set(ctx, args):
    spec = {'r': _relation_flag(ctx), 'relation': _relation_flag(ctx), 'app': ('bool', 'app'),
            'file': ('str', 'file'), 'format': ('str', 'format')}
    opts, pos = parse_args(args, spec)
    rid = _default_rid(ctx, opts)
    overrides = keyvalues(pos)
    if opts.get('format'):
        sys.stderr.write('--format flag deprecated for command "relation-set"')
    settings = {}
    if opts.get('file'):
        try:
            settings = parse_settings_text(_stdin_or_file(opts['file']))
        except ValueError as e:
            raise ToolError(str(e))
    settings.update(overrides)
    app = bool(opts.get('app'))
    if app and not ctx.is_leader:
        raise ToolError('cannot write relation settings')
    scope = 'app' if app else 'unit'

    def fn(ch):
        rs = ch.setdefault('relationSettings', {})
        bag = rs.setdefault(str(rid), {}).setdefault(scope, {})
        for k, v in settings.items():
            bag[k] = v if v != '' else None
    if settings:
        ctx.update_changes(fn)


def tool_relation_model_get(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['r'] = spec['relation'] = _relation_flag(ctx)
    opts, pos = parse_args(args, spec)
    _default_rid(ctx, opts)
    check_empty(pos)
    Out(opts).write({'uuid': ctx.c['model']['uuid']})


_SETTABLE = ('maintenance', 'blocked', 'waiting', 'active')


def _status_view(ctx, scope):
    ch = ctx.changes()
    local = (ch.get('_status') or {}).get(scope)
    if local:
        return local
    return ctx.get('unitStatus' if scope == 'unit' else 'applicationStatus', {}) or {}


def _details(st, include):
    d = {'status': st.get('status', 'unknown')}
    if include:
        d['message'] = st.get('message', '')
        d['status-data'] = dict(st.get('data') or {})
    return d


def tool_status_get(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['include-data'] = ('bool', 'include')
    spec['application'] = ('bool', 'application')
    opts, pos = parse_args(args, spec)
    check_empty(pos)
    include = bool(opts.get('include'))
    out = Out(opts)
    if opts.get('application'):
        if not ctx.is_leader:
            raise ToolError('finding application status: this unit is not the leader')
        app_st = _status_view(ctx, 'application')
        if not include and out.fmt == 'smart':
            out.write(app_st.get('status', 'unknown'))
            return
        units = {}
        for name, st in (ctx.get('unitStatuses', {}) or {}).items():
            units[name] = _details(st, include)
        units[ctx.unit] = _details(_status_view(ctx, 'unit'), include)
        details = _details(app_st, include)
        details['units'] = units
        out.write({'application-status': details})
        return
    st = _status_view(ctx, 'unit')
    if not include and out.fmt == 'smart':
        out.write(st.get('status', 'unknown'))
        return
    out.write(_details(st, include))


def tool_status_set(ctx, args):
    opts, pos = parse_args(args, {'application': ('bool', 'application')})
    if len(pos) < 1:
        raise UsageError('invalid args, require <status> [message]')
    status = pos[0]
    if status not in _SETTABLE:
        raise UsageError('invalid status %s, expected one of [%s]' % (_q(status), ' '.join(_SETTABLE)))
    message = pos[1] if len(pos) > 1 else ''
    check_empty(pos[2:])
    scope = 'application' if opts.get('application') else 'unit'
    if scope == 'application' and not ctx.is_leader:
        raise ToolError('setting application status: this unit is not the leader')
    ctx.emit({'type': 'status', 'scope': scope, 'status': status, 'message': message})

    def fn(ch):
        ch.setdefault('_status', {})[scope] = {'status': status, 'message': message}
    ctx.update_changes(fn)


def tool_application_version_set(ctx, args):
    opts, pos = parse_args(args, {})
    if not pos:
        raise UsageError('no version specified')
    check_empty(pos[1:])
    ctx.emit({'type': 'app-version', 'version': pos[0]})


def tool_leader_get(ctx, args):
    opts, pos = parse_args(args, FORMAT_FLAGS)
    key = ''
    if pos:
        key = pos[0]
        if key == '-':
            key = ''
        check_empty(pos[1:])
    settings = _apply(ctx.get('leaderSettings', {}), ctx.changes().get('leaderSettings'))
    if key:
        Out(opts).write(settings.get(key))
    else:
        Out(opts).write(settings)


def tool_leader_set(ctx, args):
    opts, pos = parse_args(args, {})
    settings = keyvalues(pos)
    if not ctx.is_leader:
        raise ToolError('cannot write leadership settings: cannot write settings: not the leader')

    def fn(ch):
        ls = ch.setdefault('leaderSettings', {})
        for k, v in settings.items():
            ls[k] = v if v != '' else None
    if settings:
        ctx.update_changes(fn)


def _require_action(ctx):
    if ctx.c.get('kind') != 'action' or ctx.c.get('action') is None:
        raise ToolError('not running an action')
    return ctx.c['action']


def tool_action_get(ctx, args):
    opts, pos = parse_args(args, FORMAT_FLAGS)
    keys = None
    if pos:
        check_empty(pos[1:])
        keys = pos[0].split('.')
    action = _require_action(ctx)
    params = action.get('params') or {}
    if keys is None:
        answer = params
    else:
        answer = params
        for k in keys:
            if isinstance(answer, dict) and k in answer:
                answer = answer[k]
            else:
                answer = None
                break
    Out(opts).write(answer)


def _valid_action_key(k):
    if not k:
        return False
    ok = 'abcdefghijklmnopqrstuvwxyz0123456789'
    if k[0] not in ok or k[-1] not in ok:
        return False
    return all(c in ok or c == '-' for c in k)


_RESERVED_ACTION_KEYS = ('stdout', 'stdout-encoding', 'stderr', 'stderr-encoding')


def tool_action_set(ctx, args):
    opts, pos = parse_args(args, {})
    items = []
    for a in pos:
        if '=' not in a:
            raise UsageError('argument %s must be of the form key...=value' % _q(a))
        k, v = a.split('=', 1)
        keys = k.split('.')
        for key in keys:
            if not _valid_action_key(key):
                raise UsageError('key %s must start and end with lowercase alphanumeric, and contain only '
                                 'lowercase alphanumeric, hyphens and periods' % _q(key))
        if keys[0] in _RESERVED_ACTION_KEYS:
            raise UsageError('cannot set reserved action key %s' % _q(keys[0]))
        items.append((keys, v))
    _require_action(ctx)

    def fn(ch):
        res = ch.setdefault('actionResults', {})
        for keys, v in items:
            m = res
            for key in keys[:-1]:
                nxt = m.get(key)
                if not isinstance(nxt, dict):
                    nxt = {}
                    m[key] = nxt
                m = nxt
            m[keys[-1]] = v
    if items:
        ctx.update_changes(fn)


def tool_action_fail(ctx, args):
    opts, pos = parse_args(args, {})
    if len(pos) > 1:
        check_empty(pos[1:])
    msg = pos[0] if pos else 'action failed without reason given, check action for errors'
    _require_action(ctx)

    def fn(ch):
        ch['actionFailed'] = msg
    ctx.update_changes(fn)


def tool_action_log(ctx, args):
    opts, pos = parse_args(args, {})
    if not pos:
        raise UsageError('no message specified')
    _require_action(ctx)
    ctx.emit({'type': 'action-log', 'message': ' '.join(pos)})


def _parse_port(arg):
    a = arg.lower()
    fmt = '<port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp'
    if a == 'icmp':
        return 'icmp'
    rng, _, proto = a.partition('/')
    if '/' in a and not proto:
        raise UsageError('expected %s; got %s' % (fmt, _q(arg)))
    proto = proto or 'tcp'
    lo, _, hi = rng.partition('-')
    if not lo.isdigit() or (hi and not hi.isdigit()) or ('-' in rng and not hi) or not proto.isalnum():
        raise UsageError('expected %s; got %s' % (fmt, _q(arg)))
    lo = int(lo)
    hi = int(hi) if hi else lo
    if proto == 'icmp':
        raise UsageError('protocol "icmp" doesn\'t support any ports; got "%d"' % lo)
    if lo > hi:
        raise UsageError('invalid port range %d-%d/%s; expected fromPort <= toPort' % (lo, hi, proto))
    if lo < 1 or lo > 65535:
        raise UsageError('port must be in the range [1, 65535]; got "%d"' % lo)
    if hi > 65535:
        raise UsageError('toPort must be in the range [1, 65535]; got "%d"' % hi)
    if proto not in ('tcp', 'udp'):
        raise UsageError('protocol must be "tcp", "udp", or "icmp"; got %s' % _q(proto))
    return '%d/%s' % (lo, proto) if lo == hi else '%d-%d/%s' % (lo, hi, proto)


def _port_sort_key(p):
    if p == 'icmp':
        return ('icmp', -1, -1)
    rng, _, proto = p.partition('/')
    lo, _, hi = rng.partition('-')
    try:
        return (proto, int(lo), int(hi or lo))
    except ValueError:
        return (proto, 0, 0)


def _current_ports(ctx):
    ch = ctx.changes()
    if ch.get('ports') is not None:
        return list(ch['ports'])
    return list(ctx.get('ports', []))


def _port_tool(open_):
    def tool(ctx, args):
        opts, pos = parse_args(args, {'format': ('str', 'format'), 'endpoints': ('str', 'endpoints')})
        if not pos:
            raise UsageError('no port or range specified')
        port = _parse_port(pos[0])
        check_empty(pos[1:])
        if opts.get('format'):
            sys.stderr.write('--format flag deprecated for command "%s"' % ('open-port' if open_ else 'close-port'))

        def fn(ch):
            ports = list(ch['ports']) if ch.get('ports') is not None else list(ctx.get('ports', []))
            if open_ and port not in ports:
                ports.append(port)
            if not open_ and port in ports:
                ports.remove(port)
            ch['ports'] = sorted(ports, key=_port_sort_key)
        ctx.update_changes(fn)
    return tool


def tool_opened_ports(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['endpoints'] = ('bool', 'endpoints')
    opts, pos = parse_args(args, spec)
    check_empty(pos)
    ports = sorted(_current_ports(ctx), key=_port_sort_key)
    if opts.get('endpoints'):
        ports = ['%s (*)' % p for p in ports]
    Out(opts).write(StrList(ports))


def _is_ip(addr):
    if ':' in addr:
        return all(c in '0123456789abcdefABCDEF:.' for c in addr)
    parts = addr.split('.')
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _resolve(host):
    try:
        import socket
        infos = socket.getaddrinfo(host, None)
        addrs = [i[4][0] for i in infos]
        for a in addrs:
            if not a.startswith('127.') and a != '::1':
                return a
        return addrs[0] if addrs else ''
    except Exception:
        return ''


def tool_network_get(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['primary-address'] = ('bool', 'primary')
    spec['bind-address'] = ('bool', 'bind')
    spec['ingress-address'] = ('bool', 'ingress')
    spec['egress-subnets'] = ('bool', 'egress')
    spec['r'] = spec['relation'] = _relation_flag(ctx)
    opts, pos = parse_args(args, spec)
    if not pos:
        raise UsageError('no arguments specified')
    binding = pos[0]
    if not binding:
        raise UsageError('no binding name specified')
    check_empty(pos[1:])
    addr = ctx.get('privateAddress', '')
    hostname = ''
    if addr and not _is_ip(addr):
        resolved = _resolve(addr)
        if resolved:
            hostname, addr = addr, resolved
    cidr = ''
    if _is_ip(addr):
        cidr = addr + ('/128' if ':' in addr else '/32')
    address = Ordered()
    address['hostname'] = hostname
    address['value'] = addr
    address['cidr'] = cidr
    info = Ordered()
    info['mac-address'] = ''
    info['interface-name'] = ''
    info['addresses'] = [address]
    egress = StrList([cidr] if cidr else [])
    ingress = StrList([addr] if addr else [])
    out = Out(opts)
    keys = []
    if opts.get('bind'):
        keys.append('bind-address')
    if opts.get('ingress'):
        keys.append('ingress-address')
    if opts.get('egress'):
        keys.append('egress-subnets')
    if opts.get('primary'):
        if keys:
            raise ToolError('--primary-address must be the only flag specified')
        out.write(addr)
        return
    if not keys:
        ni = Ordered()
        ni['bind-addresses'] = [info]
        if egress:
            ni['egress-subnets'] = egress
        if ingress:
            ni['ingress-addresses'] = ingress
        out.write(ni)
        return
    values = {'bind-address': addr, 'ingress-address': addr, 'egress-subnets': egress}
    if len(keys) == 1:
        out.write(values[keys[0]])
    else:
        out.write(dict((k, values[k]) for k in keys))


def tool_unit_get(ctx, args):
    opts, pos = parse_args(args, FORMAT_FLAGS)
    if not pos:
        raise UsageError('no setting specified')
    key = pos[0]
    if key not in ('private-address', 'public-address'):
        raise UsageError('unknown setting %s' % _q(key))
    check_empty(pos[1:])
    Out(opts).write(ctx.get('privateAddress' if key == 'private-address' else 'publicAddress', ''))


def tool_goal_state(ctx, args):
    opts, pos = parse_args(args, FORMAT_FLAGS)
    check_empty(pos)
    gs = ctx.get('goalState', {})
    if not gs:
        import time
        since = time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())
        units = {ctx.unit: {'status': 'active', 'since': since}}
        for name in list(ctx.get('unitStatuses', {}) or {}) + list(ctx.get('applicationUnits', []) or []):
            units.setdefault(name, {'status': 'active', 'since': since})
        relations = {}
        for rel in ctx.get('relations', []):
            ep = relations.setdefault(rel['endpoint'], {})
            if rel.get('role') != 'peer' and rel.get('remoteApplication'):
                ep[rel['remoteApplication']] = {'status': 'joined', 'since': since}
            for u in rel.get('units') or []:
                ep[u] = {'status': 'active', 'since': since}
        gs = {'units': units, 'relations': relations}
    Out(opts).write(gs)


def tool_state_get(ctx, args):
    spec = dict(FORMAT_FLAGS)
    spec['strict'] = ('bool', 'strict')
    opts, pos = parse_args(args, spec)
    key = ''
    if pos:
        key = pos[0]
        check_empty(pos[1:])
    state = _apply(ctx.get('charmState', {}), ctx.changes().get('charmState'))
    if key:
        if key not in state and opts.get('strict'):
            raise ToolError('%s not found' % _q(key))
        Out(opts).write(state.get(key))
    else:
        Out(opts).write(state)


def tool_state_set(ctx, args):
    opts, pos = parse_args(args, {'file': ('str', 'file')})
    overrides = keyvalues(pos)
    settings = {}
    if opts.get('file'):
        try:
            settings = parse_settings_text(_stdin_or_file(opts['file']))
        except ValueError as e:
            raise ToolError(str(e))
    settings.update(overrides)

    def fn(ch):
        cs = ch.setdefault('charmState', {})
        for k, v in settings.items():
            cs[k] = v if v != '' else None
    if settings:
        ctx.update_changes(fn)


def tool_state_delete(ctx, args):
    opts, pos = parse_args(args, {})
    if not pos:
        raise UsageError('no key specified')
    key = pos[0]
    check_empty(pos[1:])

    def fn(ch):
        ch.setdefault('charmState', {})[key] = None
    ctx.update_changes(fn)


# ---------------------------------------------------------------- secrets (Juju 3)
# The context carries the secrets this unit owns (its application's too) and those
# granted to it, with their content (ctx.json is emptied after the hook). What the
# hook does to them is recorded in changes.json as an ordered list `secretOps`;
# the controller applies it only if the hook exits 0. Content in that list is
# sealed with the per-hook key the context carries (secretKey), so neither
# changes.json nor result.json, which outlive the hook, hold a secret in the clear.

_XID = '0123456789abcdefghijklmnopqrstuv'
_ROTATE = ('never', 'hourly', 'daily', 'weekly', 'monthly', 'quarterly', 'yearly')
_SEALED_PREFIX = 'cfhk1:'


def _new_xid():
    n = int.from_bytes(os.urandom(12), 'big') << 4  # 96 bits -> 20 base32hex chars
    return ''.join(_XID[(n >> (95 - 5 * i)) & 31] for i in range(20))


def _keystream_xor(key, nonce, data):
    import hashlib
    import hmac
    stream = []
    need = len(data)
    counter = 0
    while need > 0:
        block = hmac.new(key, nonce + counter.to_bytes(8, 'big'), hashlib.sha256).digest()
        stream.append(block)
        need -= len(block)
        counter += 1
    ks = b''.join(stream)[:len(data)]
    return (int.from_bytes(data, 'big') ^ int.from_bytes(ks, 'big')).to_bytes(len(data), 'big') if data else b''


def _hook_keys(ctx):
    import base64
    import hashlib
    import hmac
    raw = ctx.c.get('secretKey')
    if not raw:
        raise ToolError('this hook context carries no secret key (controller too old?)')
    key = base64.b64decode(raw)
    return (hmac.new(key, b'charmflow hook secrets enc', hashlib.sha256).digest(),
            hmac.new(key, b'charmflow hook secrets mac', hashlib.sha256).digest())


def seal_content(ctx, content):
    """{key: value} -> 'cfhk1:<base64 of nonce | ciphertext | tag>' under the hook's key."""
    import base64
    import hashlib
    import hmac
    enc, mac = _hook_keys(ctx)
    nonce = os.urandom(16)
    ct = _keystream_xor(enc, nonce, plain_json(content).encode('utf-8'))
    tag = hmac.new(mac, nonce + ct, hashlib.sha256).digest()[:16]
    return _SEALED_PREFIX + base64.b64encode(nonce + ct + tag).decode('ascii')


def open_content(ctx, sealed):
    import base64
    import hashlib
    import hmac
    enc, mac = _hook_keys(ctx)
    raw = base64.b64decode(sealed[len(_SEALED_PREFIX):])
    nonce, ct, tag = raw[:16], raw[16:-16], raw[-16:]
    if not hmac.compare_digest(hmac.new(mac, nonce + ct, hashlib.sha256).digest()[:16], tag):
        raise ToolError('a pending secret change does not open with this hook\'s key')
    return json_loads(_keystream_xor(enc, nonce, ct).decode('utf-8'))


def parse_secret_uri(text):
    """secret:<xid>, secret://<model-uuid>/<xid> or a bare xid -> the xid."""
    s = text
    if s.startswith('secret://'):
        s = s[len('secret://'):]
        if '/' not in s:
            raise UsageError('secret URI %s not valid' % _q(text))
        s = s.rsplit('/', 1)[1]
    elif s.startswith('secret:'):
        s = s[len('secret:'):]
    if len(s) != 20 or any(c not in _XID for c in s):
        raise UsageError('secret URI %s not valid' % _q(text))
    return s


def _uri(xid):
    return 'secret:' + xid


def _valid_secret_key(k):
    # Juju: ^([a-z](?:-?[a-z0-9]){2,})$
    if len(k) < 3 or not ('a' <= k[0] <= 'z') or k.endswith('-') or '--' in k:
        return False
    return all(('a' <= c <= 'z') or ('0' <= c <= '9') or c == '-' for c in k)


def secret_content_args(args, file_name):
    """key=value, key#base64=..., key#file=PATH and --file YAML, as Juju's CreateSecretData reads them."""
    import base64
    data = {}
    for a in args:
        if '=' not in a:
            raise UsageError('key value %s not valid' % _q(a))
        k, v = a.split('=', 1)
        if k.endswith('#base64'):
            k = k[:-len('#base64')]
            try:
                v = base64.b64decode(v.encode('ascii'), validate=True).decode('utf-8')
            except Exception:
                raise UsageError('base64 value for key %s not valid' % _q(k))
        elif k.endswith('#file'):
            k = k[:-len('#file')]
            try:
                with open(v, 'rb') as f:
                    v = f.read().decode('utf-8')
            except (OSError, IOError, UnicodeDecodeError) as e:
                raise UsageError('cannot read secret value for key %s from %s: %s' % (_q(k), _q(v), e))
        if not _valid_secret_key(k):
            raise UsageError('key %s not valid' % _q(k))
        data[k] = v
    if file_name:
        try:
            extra = parse_settings_text(_stdin_or_file(file_name))
        except (ValueError, ToolError) as e:
            raise UsageError('cannot read secret data from %s: %s' % (_q(file_name), e))
        for k, v in extra.items():
            if k.endswith('#base64'):
                k = k[:-len('#base64')]
                try:
                    v = base64.b64decode(v.encode('ascii'), validate=True).decode('utf-8')
                except Exception:
                    raise UsageError('base64 value for key %s not valid' % _q(k))
            if not _valid_secret_key(k):
                raise UsageError('key %s not valid' % _q(k))
            data[k] = v
    size = sum(len(k) + len(v.encode('utf-8')) for k, v in data.items())
    if size > 64 * 1024:
        raise ToolError('secret content of %d bytes exceeds the limit of 65536 bytes' % size)
    return data


def _expire_value(spec):
    """--expire: an RFC 3339 time (with or without zone) or a positive Go duration -> RFC 3339 UTC."""
    import time
    if not spec:
        return None
    s = spec.strip()
    if 'T' in s and s[:4].isdigit():
        import datetime
        t = s
        if t.endswith('Z') or t.endswith('z'):
            t = t[:-1] + '+00:00'
        try:
            dt = datetime.datetime.fromisoformat(t)
        except ValueError:
            raise UsageError('expire time or duration %s not valid' % _q(spec))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        return dt.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    units = {'ns': 1e-9, 'us': 1e-6, 'µs': 1e-6, 'ms': 1e-3, 's': 1, 'm': 60, 'h': 3600}
    total = 0.0
    i = 0
    if not s:
        raise UsageError('expire time or duration %s not valid' % _q(spec))
    while i < len(s):
        j = i
        while j < len(s) and (s[j].isdigit() or s[j] == '.'):
            j += 1
        k = j
        while k < len(s) and not (s[k].isdigit() or s[k] == '.'):
            k += 1
        num, unit = s[i:j], s[j:k]
        if not num or unit not in units:
            raise UsageError('expire time or duration %s not valid' % _q(spec))
        total += float(num) * units[unit]
        i = k
    if total <= 0:
        raise UsageError('negative expire duration %s not valid' % _q(spec))
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() + total))


def _rotate_value(v):
    if v and v not in _ROTATE:
        raise UsageError('rotate policy %s not valid' % _q(v))
    return v or None


def secret_state(ctx):
    """The unit's secrets as the hook sees them now: the context with this hook's
    pending operations applied, in order. Returns (owned, granted): xid -> dict."""
    import copy
    sec = ctx.c.get('secrets') or {}
    owned = dict((s['id'], copy.deepcopy(s)) for s in sec.get('owned') or ())
    granted = dict((s['id'], copy.deepcopy(s)) for s in sec.get('granted') or ())
    for op in ctx.changes().get('secretOps') or ():
        kind = op.get('op')
        sid = op.get('id')
        if kind == 'add':
            owned[sid] = {'id': sid, 'owner': op['owner'], 'label': op.get('label') or '',
                          'description': op.get('description') or '', 'expiry': op.get('expire'),
                          'rotation': op.get('rotate'), 'revision': 1, 'revisions': [1],
                          'content': open_content(ctx, op['content']), 'access': [], 'bumped': True}
        elif kind == 'set' and sid in owned:
            s = owned[sid]
            if op.get('content') is not None:
                new = open_content(ctx, op['content'])
                if not s.get('bumped') and new == s.get('content'):
                    pass  # the same content makes no new revision (Juju compares checksums)
                elif not s.get('bumped'):
                    s['revision'] = int(s.get('revision') or 0) + 1
                    s.setdefault('revisions', []).append(s['revision'])
                    s['bumped'] = True
                s['content'] = new
            for f, key in (('label', 'label'), ('description', 'description'), ('expire', 'expiry'),
                           ('rotate', 'rotation')):
                if op.get(f) is not None:
                    s[key] = op[f]
        elif kind == 'remove' and sid in owned:
            rev = op.get('revision')
            if rev is None:
                del owned[sid]
            else:
                s = owned[sid]
                s['revisions'] = [r for r in s.get('revisions') or () if r != rev]
        elif kind == 'grant' and sid in owned:
            acc = owned[sid].setdefault('access', [])
            entry = {'target': op.get('unit') or op.get('app'), 'relation': op.get('relationId')}
            if entry not in acc:
                acc.append(entry)
        elif kind == 'revoke' and sid in owned:
            acc = owned[sid].get('access') or []
            who = op.get('unit') or op.get('app')
            owned[sid]['access'] = [a for a in acc if a.get('target') != who and
                                    not (op.get('app') and str(a.get('target', '')).split('/')[0] == op['app'])]
        elif kind == 'track' and sid in granted:
            g = granted[sid]
            if op.get('revision') is not None:
                g['revision'] = op['revision']
                g['content'] = g.get('latestContent')
            if op.get('label') is not None:
                g['label'] = op['label']
    return owned, granted


def _may_manage(ctx, s):
    if s.get('owner') == 'unit':
        return True  # only the owning unit's context holds it
    return ctx.is_leader


def _find_secret(ctx, owned, granted, xid=None, label=None):
    """-> ('owned'|'granted', entry) or raises a not-found error."""
    if xid is not None:
        if xid in owned:
            return 'owned', owned[xid]
        if xid in granted:
            return 'granted', granted[xid]
        raise ToolError('secret %s not found' % _q(xid))
    for s in owned.values():
        if s.get('label') == label:
            return 'owned', s
    for s in granted.values():
        if s.get('label') == label:
            return 'granted', s
    raise ToolError('secret with label %s not found' % _q(label))


def _record_op(ctx, op):
    def fn(ch):
        ch.setdefault('secretOps', []).append(op)
    ctx.update_changes(fn)


def _owned_for_change(ctx, args0, verb):
    xid = parse_secret_uri(args0)
    owned, granted = secret_state(ctx)
    if xid not in owned:
        if xid in granted:
            raise ToolError('cannot %s secret %s: permission denied (this unit does not own it)' % (verb, _q(xid)))
        raise ToolError('secret %s not found' % _q(xid))
    s = owned[xid]
    if not _may_manage(ctx, s):
        raise ToolError('cannot %s secret %s: permission denied (an application-owned secret is '
                        'managed by the leader only)' % (verb, _q(xid)))
    return xid, s, owned


def _label_taken(owned, label, owner, but=None):
    return any(s.get('label') == label and s.get('owner') == owner and s['id'] != but for s in owned.values())


_UPSERT_FLAGS = {'expire': ('str', 'expire'), 'rotate': ('str', 'rotate'), 'description': ('str', 'description'),
                 'label': ('str', 'label'), 'file': ('str', 'file'), 'owner': ('str', 'owner')}


def tool_secret_add(ctx, args):
    opts, pos = parse_args(args, _UPSERT_FLAGS)
    if not pos and not opts.get('file'):
        raise UsageError('missing secret value or filename')
    expire = _expire_value(opts.get('expire'))
    rotate = _rotate_value(opts.get('rotate'))
    owner = opts.get('owner', 'application')
    if owner not in ('application', 'unit'):
        raise UsageError('secret owner %s not valid' % _q(owner))
    content = secret_content_args(pos, opts.get('file'))
    if not content:
        raise ToolError('empty secret value not valid')
    if owner == 'application' and not ctx.is_leader:
        raise ToolError('cannot add an application-owned secret: permission denied (this unit is not the leader)')
    owned, _ = secret_state(ctx)
    label = opts.get('label')
    if label and _label_taken(owned, label, owner):
        raise ToolError('secret with label %s already exists' % _q(label))
    xid = _new_xid()
    op = {'op': 'add', 'id': xid, 'owner': owner, 'content': seal_content(ctx, content)}
    for f in ('label', 'description'):
        if opts.get(f):
            op[f] = opts[f]
    if expire:
        op['expire'] = expire
    if rotate:
        op['rotate'] = rotate
    _record_op(ctx, op)
    sys.stdout.write(_uri(xid) + '\n')


def tool_secret_set(ctx, args):
    opts, pos = parse_args(args, _UPSERT_FLAGS)
    if not pos:
        raise UsageError('missing secret URI')
    expire = _expire_value(opts.get('expire'))
    rotate = _rotate_value(opts.get('rotate'))
    content = secret_content_args(pos[1:], opts.get('file'))
    xid, s, owned = _owned_for_change(ctx, pos[0], 'update')
    label = opts.get('label')
    if label and _label_taken(owned, label, s.get('owner'), but=xid):
        raise ToolError('secret with label %s already exists' % _q(label))
    op = {'op': 'set', 'id': xid}
    if content:
        op['content'] = seal_content(ctx, content)
    for f in ('label', 'description'):
        if opts.get(f):
            op[f] = opts[f]
    if expire:
        op['expire'] = expire
    if rotate:
        op['rotate'] = rotate
    if len(op) > 2:
        _record_op(ctx, op)


def tool_secret_get(ctx, args):
    spec = {'format': (_secret_format, 'format'), 'o': ('str', 'output'), 'output': ('str', 'output'),
            'label': ('str', 'label'), 'peek': ('bool', 'peek'), 'refresh': ('bool', 'refresh')}
    opts, pos = parse_args(args, spec)
    opts.setdefault('format', 'yaml')
    xid = None
    if pos:
        try:
            xid = parse_secret_uri(pos[0])
        except UsageError:
            raise UsageError('secret URI %s not valid' % _q(pos[0]))
        pos = pos[1:]
    label = opts.get('label')
    if xid is None and not label:
        raise UsageError('require either a secret URI or label')
    if opts.get('peek') and opts.get('refresh'):
        raise UsageError('specify one of --peek or --refresh but not both')
    key = None
    if pos:
        key = pos[0]
        check_empty(pos[1:])
    owned, granted = secret_state(ctx)
    try:
        kind, s = _find_secret(ctx, owned, granted, xid, None if xid else label)
    except ToolError:
        if xid is not None:
            raise ToolError('secret %s not found (or not granted to %s)' % (_q(xid), ctx.unit))
        raise
    if kind == 'owned':
        # an owner always reads the latest revision, with this hook's own changes
        content = s.get('content') or {}
        if xid is not None and label and label != s.get('label') and _may_manage(ctx, s):
            if _label_taken(owned, label, s.get('owner'), but=s['id']):
                raise ToolError('secret with label %s already exists' % _q(label))
            _record_op(ctx, {'op': 'set', 'id': s['id'], 'label': label})
    else:
        track = {}
        if opts.get('peek') or opts.get('refresh') or s.get('revision') is None:
            content = s.get('latestContent') or {}
            if not opts.get('peek') and s.get('revision') != s.get('latestRevision'):
                track['revision'] = s.get('latestRevision')
        else:
            content = s.get('content') or {}
        if xid is not None and label and label != s.get('label'):
            track['label'] = label
        if track:
            track.update({'op': 'track', 'id': s['id']})
            _record_op(ctx, track)
    out = Out(opts)
    if key is None:
        out.write(dict(content))
        return
    b64 = key.endswith('#base64')
    if b64:
        key = key[:-len('#base64')]
    if key not in content:
        raise ToolError('secret key %s not found' % _q(key))
    value = content[key]
    if b64:
        import base64
        value = base64.b64encode(value.encode('utf-8')).decode('ascii')
    out.write(value)


def _secret_format(val):
    if val not in ('yaml', 'json'):
        raise UsageError('unknown format %s' % _q(val))
    return val


def tool_secret_info_get(ctx, args):
    spec = {'format': (_secret_format, 'format'), 'o': ('str', 'output'), 'output': ('str', 'output'),
            'label': ('str', 'label')}
    opts, pos = parse_args(args, spec)
    opts.setdefault('format', 'yaml')
    xid = None
    if pos:
        xid = parse_secret_uri(pos[0])
        pos = pos[1:]
    label = opts.get('label')
    if xid is None and not label:
        raise UsageError('require either a secret URI or label')
    if xid is not None and label:
        raise UsageError('specify either a secret URI or label but not both')
    check_empty(pos)
    owned, _ = secret_state(ctx)
    found = None
    for s in owned.values():
        if not _may_manage(ctx, s):
            continue
        if (xid is not None and s['id'] == xid) or (xid is None and s.get('label') == label):
            found = s
            break
    if found is None:
        raise ToolError('secret %s not found' % _q(xid if xid is not None else label))
    md = Ordered()
    md['revision'] = int(found.get('revision') or 0)
    md['label'] = found.get('label') or ''
    md['owner'] = found.get('owner') or 'application'
    if found.get('description'):
        md['description'] = found['description']
    if found.get('rotation'):
        md['rotation'] = found['rotation']
    if found.get('expiry'):
        md['expiry'] = found['expiry']
    access = []
    for a in found.get('access') or ():
        target = str(a.get('target') or '')
        entry = Ordered()
        entry['target'] = ('unit-' + target.replace('/', '-')) if '/' in target else ('application-' + target)
        entry['scope'] = 'relation-%s' % a.get('relation')
        entry['role'] = 'view'
        access.append(entry)
    if access:
        md['access'] = access
    Out(opts).write({found['id']: md})


def tool_secret_ids(ctx, args):
    opts, pos = parse_args(args, FORMAT_FLAGS)
    check_empty(pos)
    owned, _ = secret_state(ctx)
    Out(opts).write(StrList(sorted(s['id'] for s in owned.values() if _may_manage(ctx, s))))


def tool_secret_remove(ctx, args):
    def revision(v):
        if not v.isdigit():
            raise UsageError('invalid value %s for option --revision' % _q(v))
        return int(v)
    opts, pos = parse_args(args, {'revision': (revision, 'revision')})
    if not pos:
        raise UsageError('missing secret URI')
    check_empty(pos[1:])
    xid, s, _ = _owned_for_change(ctx, pos[0], 'remove')
    op = {'op': 'remove', 'id': xid}
    rev = opts.get('revision') or 0
    if rev > 0:
        if rev not in (s.get('revisions') or ()):
            raise ToolError('secret revision %s not found' % _q('%s/%d' % (xid, rev)))
        op['revision'] = rev
    _record_op(ctx, op)


def _grant_target(ctx, opts):
    rid = opts.get('rid')
    if rid is None:
        raise UsageError('no relation id specified')
    rel = ctx.relation(rid)
    return rid, rel.get('remoteApplication', '')


def tool_secret_grant(ctx, args):
    spec = {'r': _relation_flag(ctx), 'relation': _relation_flag(ctx), 'unit': ('str', 'unit')}
    opts, pos = parse_args(args, spec)
    if not pos:
        raise UsageError('missing secret URI')
    xid = parse_secret_uri(pos[0])
    rid, app = _grant_target(ctx, opts)
    unit = opts.get('unit')
    if unit:
        if '/' not in unit or not unit.split('/', 1)[1].isdigit():
            raise UsageError('unit %s not valid' % _q(unit))
        if unit.split('/', 1)[0] != app:
            raise UsageError('cannot specify unit %s in relation to application %s' % (_q(unit), _q(app)))
    check_empty(pos[1:])
    xid, _, _ = _owned_for_change(ctx, pos[0], 'grant access to')
    op = {'op': 'grant', 'id': xid, 'relationId': rid, 'app': app}
    if unit:
        op['unit'] = unit
    _record_op(ctx, op)


def tool_secret_revoke(ctx, args):
    spec = {'r': _relation_flag(ctx), 'relation': _relation_flag(ctx), 'unit': ('str', 'unit'),
            'app': ('str', 'app'), 'application': ('str', 'app')}
    opts, pos = parse_args(args, spec)
    if not pos:
        raise UsageError('missing secret URI')
    parse_secret_uri(pos[0])
    app = opts.get('app')
    unit = opts.get('unit')
    if app and unit:
        raise UsageError('specify only one of application or unit')
    rid = opts.get('rid')
    if rid is not None:
        if app:
            raise UsageError('do not specify both relation and app')
        app = ctx.relation(rid).get('remoteApplication', '')
    if not app and not unit:
        raise UsageError('missing relation or application or unit')
    check_empty(pos[1:])
    xid, _, _ = _owned_for_change(ctx, pos[0], 'revoke access to')
    op = {'op': 'revoke', 'id': xid}
    if unit:
        op['unit'] = unit
    else:
        op['app'] = app
    if rid is not None:
        op['relationId'] = rid
    _record_op(ctx, op)


TOOLS = {
    'juju-log': tool_juju_log,
    'is-leader': tool_is_leader,
    'config-get': tool_config_get,
    'relation-ids': tool_relation_ids,
    'relation-list': tool_relation_list,
    'relation-get': tool_relation_get,
    'relation-set': tool_relation_set,
    'relation-model-get': tool_relation_model_get,
    'status-get': tool_status_get,
    'status-set': tool_status_set,
    'application-version-set': tool_application_version_set,
    'leader-get': tool_leader_get,
    'leader-set': tool_leader_set,
    'action-get': tool_action_get,
    'action-set': tool_action_set,
    'action-fail': tool_action_fail,
    'action-log': tool_action_log,
    'open-port': _port_tool(True),
    'close-port': _port_tool(False),
    'opened-ports': tool_opened_ports,
    'network-get': tool_network_get,
    'unit-get': tool_unit_get,
    'goal-state': tool_goal_state,
    'state-get': tool_state_get,
    'state-set': tool_state_set,
    'state-delete': tool_state_delete,
    'secret-add': tool_secret_add,
    'secret-set': tool_secret_set,
    'secret-get': tool_secret_get,
    'secret-info-get': tool_secret_info_get,
    'secret-ids': tool_secret_ids,
    'secret-remove': tool_secret_remove,
    'secret-grant': tool_secret_grant,
    'secret-revoke': tool_secret_revoke,
}

UNSUPPORTED = (
    'credential-get', 'storage-list', 'storage-get', 'storage-add',
    'resource-get', 'juju-reboot', 'add-metric', 'pod-spec-get', 'pod-spec-set', 'k8s-spec-set',
    'k8s-raw-set', 'payload-register', 'payload-status-set', 'payload-unregister',
)

TOOL_NAMES = tuple(sorted(TOOLS)) + UNSUPPORTED


def _usage(name):
    args, purpose = USAGE.get(name, ('[options]', name))
    return 'Usage: %s %s\n\nSummary:\n%s\n' % (name, args, purpose)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    name = os.path.basename(argv[0])
    args = argv[1:]
    if name in ('hook_tool.py', 'hook_tool'):
        if not args:
            sys.stderr.write('usage: hook_tool.py <tool> [args...]\n')
            return 2
        name = args.pop(0)
    if name in UNSUPPORTED:
        if '--help' in args or '-h' in args:
            sys.stdout.write('Usage: %s [options]\n\nSummary:\nnot supported by charmflow yet\n' % name)
            return 0
        sys.stderr.write('ERROR %s is not supported by charmflow yet\n' % name)
        return 1
    tool = TOOLS.get(name)
    if tool is None:
        sys.stderr.write('ERROR unknown hook tool %s\n' % _q(name))
        return 1
    try:
        for i, a in enumerate(args):
            try:
                a.encode('utf-8')
            except UnicodeEncodeError:
                raise UsageError('argument %d is not valid UTF-8' % (i + 1))
        hook_dir = os.environ.get('CHARMFLOW_HOOK_DIR')
        if not hook_dir:
            if '--help' in args or '-h' in args:
                raise Help()
            raise ToolError('%s must be run from a charmflow hook (CHARMFLOW_HOOK_DIR is not set)' % name)
        ctx = Ctx(hook_dir)
        tool(ctx, args)
        sys.stdout.flush()
        return 0
    except Help:
        sys.stdout.write(_usage(name))
        return 0
    except UsageError as e:
        sys.stderr.write('ERROR %s\n' % e)
        return 2
    except ToolError as e:
        sys.stderr.write('ERROR %s\n' % e)
        return 1
    except BrokenPipeError:
        return 1


if __name__ == '__main__':
    sys.exit(main())
