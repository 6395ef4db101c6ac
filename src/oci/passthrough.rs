//! The parsing of the programs' early paths (issue 17): the wrapper's
//! runtime calls other than `create`/`run` (find the real runc from the
//! command line and the config file), and the hook handed to the daemon
//! (its command line, the config file's `debug` and `runtime_dir`, the
//! request's JSON strings), before the C library has started.
//!
//! The entry points of `macvlan-runc` and `macvlan` run this ahead of
//! glibc's `_start`, where a static glibc spends half a millisecond per
//! process on this VM probing the CPU (`init_cacheinfo`: trapping `cpuid`
//! loops) — paid by every call that only execs runc or hands a hook to the
//! daemon. So nothing here may call the C library (not even
//! `memcpy`/`memcmp`, which are resolved at its start), read a pointer
//! stored in static data (not relocated yet in a static-pie), allocate or
//! panic: byte loops, `get` instead of indexing, no `==` on slices.
//! Anything it is not sure of is [`Toml::Unsure`] or `None`, and the full
//! program (after `_start`) handles the call as before.

/// Byte-wise equality without `memcmp`.
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => i += 1,
            _ => return false,
        }
    }
    true
}

/// `a` without its first `n` bytes.
#[inline]
fn skip(a: &[u8], n: usize) -> &[u8] {
    a.get(n..).unwrap_or(&[])
}

/// `a` starts with `prefix`.
#[inline]
fn begins(a: &[u8], prefix: &[u8]) -> bool {
    match a.get(..prefix.len()) {
        Some(head) => same(head, prefix),
        None => false,
    }
}

/// `-name`, `--name`, `--name=value` → (name, inline value), as Go's flag
/// package reads runc's global options ([`super::wrapper::parse_invocation`]).
fn split_flag(arg: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let body = if begins(arg, b"--") {
        skip(arg, 2)
    } else if begins(arg, b"-") {
        skip(arg, 1)
    } else {
        return None;
    };
    if body.is_empty() {
        return None;
    }
    let mut i = 0;
    while i < body.len() {
        if body.get(i) == Some(&b'=') {
            return Some((body.get(..i).unwrap_or(&[]), Some(skip(body, i + 1))));
        }
        i += 1;
    }
    Some((body, None))
}

/// The search path `execvp` uses when `PATH` is not set (both paths of
/// the wrapper look runc up with it).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The default config file as a C string, for the early paths to open.
pub const DEFAULT_CONFIG_NUL: &[u8] = b"/etc/macvlan-runc/config.toml\0";
const _: () = {
    let (with_nul, path) = (
        DEFAULT_CONFIG_NUL,
        crate::config::DEFAULT_CONFIG_PATH.as_bytes(),
    );
    assert!(with_nul.len() == path.len() + 1);
    let mut i = 0;
    while i < path.len() {
        assert!(with_nul[i] == path[i]);
        i += 1;
    }
};

/// The wrapper's own option, `--macvlan-config PATH`, removed before runc
/// sees the command line.
pub fn is_own_option(name: &[u8]) -> bool {
    same(name, b"macvlan-config")
}

/// Whether a global option takes a value: ours, or one of runc's (runc 1.1
/// `runc --help`). Both the full wrapper's parser and this one ask here.
pub fn takes_value(name: &[u8]) -> bool {
    is_own_option(name)
        || same(name, b"root")
        || same(name, b"log")
        || same(name, b"log-format")
        || same(name, b"criu")
        || same(name, b"rootless")
}

/// What the fast path needs from a runc command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The index of the subcommand.
    pub subcommand: usize,
    /// Where `--macvlan-config` is, if given.
    pub own: Option<OwnOption>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnOption {
    /// The option's index.
    pub at: usize,
    /// Where the value is: the argument `at + 1`, or inline after `=`.
    pub separate: bool,
}

impl OwnOption {
    /// The arguments it takes: the option, and its value when apart.
    pub fn args(&self) -> core::ops::Range<usize> {
        self.at..self.at + if self.separate { 2 } else { 1 }
    }
}

/// A pass-through call: one whose subcommand is neither `create` nor `run`,
/// with `--macvlan-config` at most once and no `--` before the subcommand.
/// `None` for everything else.
pub fn pass_through(args: &[&[u8]]) -> Option<Call> {
    let mut own = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args.get(i)?;
        if same(arg, b"--") {
            return None;
        }
        let Some((name, inline)) = split_flag(arg) else {
            if same(arg, b"create") || same(arg, b"run") {
                return None;
            }
            return Some(Call { subcommand: i, own });
        };
        let separate = takes_value(name) && inline.is_none();
        if is_own_option(name) {
            if own.is_some() || (separate && i + 1 >= args.len()) {
                return None;
            }
            own = Some(OwnOption { at: i, separate });
        }
        i += if separate { 2 } else { 1 };
    }
    None
}

/// The value of an environment entry `NAME=value` for `name`.
pub fn begins_env<'a>(entry: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    (begins(entry, name) && entry.get(name.len()) == Some(&b'='))
        .then(|| skip(entry, name.len() + 1))
}

/// The value of `--macvlan-config`: the next argument, or after `=`.
pub fn own_value<'a>(args: &[&'a [u8]], own: OwnOption) -> &'a [u8] {
    let arg = args.get(own.at).copied().unwrap_or(&[]);
    if own.separate {
        return args.get(own.at + 1).copied().unwrap_or(&[]);
    }
    let mut i = 0;
    while arg.get(i).is_some_and(|b| *b != b'=') {
        i += 1;
    }
    skip(arg, i + 1)
}

/// A config file's value for one key, read without a TOML parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toml<'a> {
    /// A string without escapes (`"…"` or `'…'`): its contents.
    Str(&'a [u8]),
    /// A bare value (boolean, number).
    Token(&'a [u8]),
    /// The key is not there: the default applies.
    Absent,
    /// Something this reader does not follow: leave it to the full parser.
    Unsure,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn trim_start(a: &[u8]) -> &[u8] {
    let mut i = 0;
    while a.get(i).is_some_and(|b| is_space(*b)) {
        i += 1;
    }
    skip(a, i)
}

fn is_bare_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'_' | b'.' | b':')
}

/// The rest of a line after a value: blank or a comment.
fn nothing_after(rest: &[u8]) -> bool {
    let rest = trim_start(rest);
    rest.is_empty() || rest.first() == Some(&b'#')
}

/// Where the line that `at` is on ends (its `\n`, or the end of `text`).
fn line_end(text: &[u8], mut at: usize) -> usize {
    while text.get(at).is_some_and(|b| *b != b'\n') {
        at += 1;
    }
    at
}

/// A string without escapes, control or non-ASCII bytes at the start of
/// `value`: its contents and the length it takes. A `\"\"\"` string is
/// the empty string followed by a quote, which no caller accepts.
fn plain_string(value: &[u8]) -> Option<(&[u8], usize)> {
    let quote = *value.first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let body = skip(value, 1);
    let mut i = 0;
    loop {
        let b = *body.get(i)?;
        if b == quote {
            return Some((body.get(..i)?, i + 2));
        }
        if b == b'\\' || !(0x20..0x7f).contains(&b) {
            return None;
        }
        i += 1;
    }
}

/// A string or a bare token at the start of `value`, and its length.
fn scalar(value: &[u8]) -> Option<(Toml<'_>, usize)> {
    if let Some((body, len)) = plain_string(value) {
        return Some((Toml::Str(body), len));
    }
    let mut i = 0;
    while value.get(i).is_some_and(|b| is_token_byte(*b)) {
        i += 1;
    }
    (i > 0).then(|| (Toml::Token(value.get(..i).unwrap_or(&[])), i))
}

/// Spaces, line ends and comments from `at` on (inside an array).
fn skip_blank(text: &[u8], mut at: usize) -> usize {
    loop {
        match text.get(at) {
            Some(b) if is_space(*b) || *b == b'\n' => at += 1,
            Some(b'#') => at = line_end(text, at),
            _ => return at,
        }
    }
}

/// An array of strings and tokens from its `[` at `at`, over any number
/// of lines: where it ends (after its `]`).
fn skip_array(text: &[u8], at: usize) -> Option<usize> {
    let mut at = at + 1;
    loop {
        at = skip_blank(text, at);
        if text.get(at)? == &b']' {
            return Some(at + 1);
        }
        let (_, len) = scalar(skip(text, at))?;
        at = skip_blank(text, at + len);
        match text.get(at)? {
            b',' => at += 1,
            b']' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// Finds `key` in `[table]` (`b""`: the top level) of a config file. Only
/// a file made of blank lines, comments, `[bare_name]` headers and
/// `bare_key = value` lines is read, a value being a string without
/// escapes, a bare token, or an array of those over any number of lines;
/// anything else is [`Toml::Unsure`], as is an array for `key`.
pub fn lookup<'a>(text: &'a [u8], table: &[u8], key: &[u8]) -> Toml<'a> {
    let mut found = Toml::Absent;
    let mut current: &[u8] = &[];
    let mut at = 0;
    loop {
        while text.get(at).is_some_and(|b| is_space(*b)) {
            at += 1;
        }
        let end = line_end(text, at);
        let line = text.get(at..end).unwrap_or(&[]);
        match line.first() {
            None | Some(b'#') => {}
            Some(b'[') => {
                let mut k = 1;
                while line.get(k).is_some_and(|b| is_bare_key_byte(*b)) {
                    k += 1;
                }
                if k == 1 || line.get(k) != Some(&b']') || !nothing_after(skip(line, k + 1)) {
                    return Toml::Unsure;
                }
                current = line.get(1..k).unwrap_or(&[]);
            }
            Some(_) => {
                let mut k = 0;
                while line.get(k).is_some_and(|b| is_bare_key_byte(*b)) {
                    k += 1;
                }
                let name = line.get(..k).unwrap_or(&[]);
                let after = trim_start(skip(line, k));
                if k == 0 || after.first() != Some(&b'=') {
                    return Toml::Unsure;
                }
                let value = trim_start(skip(after, 1));
                let wanted = same(current, table) && same(name, key);
                if value.first() == Some(&b'[') {
                    // The array may span lines: go on after its `]`.
                    let start = at + (line.len() - value.len());
                    let Some(close) = skip_array(text, start) else {
                        return Toml::Unsure;
                    };
                    let end = line_end(text, close);
                    if wanted || !nothing_after(text.get(close..end).unwrap_or(&[])) {
                        return Toml::Unsure;
                    }
                    at = end;
                } else {
                    let Some((scalar, len)) = scalar(value) else {
                        return Toml::Unsure;
                    };
                    if !nothing_after(skip(value, len))
                        || (wanted && !matches!(found, Toml::Absent))
                    {
                        return Toml::Unsure;
                    }
                    if wanted {
                        found = scalar;
                    }
                    at = end;
                }
            }
        }
        let end = line_end(text, at);
        if end >= text.len() {
            return found;
        }
        at = end + 1;
    }
}

/// The top-level `runtime` of a config file (the wrapper's runc): a
/// non-empty string, absent, or [`Toml::Unsure`].
pub fn runtime(text: &[u8]) -> Toml<'_> {
    match lookup(text, b"", b"runtime") {
        Toml::Str(value) if !value.is_empty() => Toml::Str(value),
        Toml::Absent => Toml::Absent,
        _ => Toml::Unsure,
    }
}

/// What the hook's early path needs from `macvlan`'s command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookCall<'a> {
    /// `--config PATH` or `--config=PATH`.
    pub config: Option<&'a [u8]>,
    /// The stage argument, if given.
    pub stage: Option<&'a [u8]>,
}

/// `[--config PATH] hook [STAGE]`, the option in any place, as the full
/// command line's `hook_only` reads it; `None` for anything else, and for
/// `--debug` (its timing line is the full path's) and non-ASCII bytes.
pub fn hook_call<'a>(args: &[&'a [u8]]) -> Option<HookCall<'a>> {
    let mut config = None;
    let mut verb: Option<&[u8]> = None;
    let mut stage = None;
    let mut i = 0;
    while i < args.len() {
        let arg = *args.get(i)?;
        let mut j = 0;
        while j < arg.len() {
            if !arg.get(j)?.is_ascii() {
                return None;
            }
            j += 1;
        }
        if same(arg, b"--config") && config.is_none() {
            config = Some(*args.get(i + 1)?);
            i += 1;
        } else if begins(arg, b"--config=") && config.is_none() {
            config = Some(skip(arg, b"--config=".len()));
        } else if begins(arg, b"-") {
            return None;
        } else if verb.is_none() {
            verb = Some(arg);
        } else if stage.is_none() {
            stage = Some(arg);
        } else {
            return None;
        }
        i += 1;
    }
    if !same(verb?, b"hook") || config.is_some_and(|c| c.is_empty()) {
        return None;
    }
    Some(HookCall { config, stage })
}

/// Writes `bytes` as the body of a JSON string (without the quotes) in
/// pieces to `out`: quote, backslash and control bytes escaped, the rest
/// as it is (a daemon's JSON parser refuses what is not UTF-8).
pub fn json_escaped(bytes: &[u8], out: &mut impl FnMut(&[u8])) {
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(0);
        if b == b'"' || b == b'\\' || b < 0x20 {
            out(bytes.get(from..i).unwrap_or(&[]));
            let hex = b"0123456789abcdef";
            let escaped = match b {
                b'"' => [b'\\', b'"', 0, 0, 0, 0],
                b'\\' => [b'\\', b'\\', 0, 0, 0, 0],
                _ => [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    hex.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
                    hex.get(usize::from(b & 15)).copied().unwrap_or(b'0'),
                ],
            };
            let len = if b < 0x20 { 6 } else { 2 };
            out(escaped.get(..len).unwrap_or(&[]));
            from = i + 1;
        }
        i += 1;
    }
    out(bytes.get(from..).unwrap_or(&[]));
}

/// `n` in decimal into `buf`: the digits.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(slot) = buf.get_mut(at) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            return buf.get(at..).unwrap_or(&[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::wrapper::parse_invocation;

    fn bytes(line: &str) -> Vec<Vec<u8>> {
        line.split_whitespace()
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    fn call(line: &str) -> Option<Call> {
        let owned = bytes(line);
        let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        pass_through(&args)
    }

    #[test]
    fn passes_through_what_the_full_wrapper_would_only_exec() {
        for line in [
            "start id",
            "--root /r --log /l --log-format json delete --force id",
            "--root=/r state id",
            "-root /r kill id 9",
            "--debug --systemd-cgroup features",
            "--macvlan-config /c.toml --root /r delete id",
            "--root /r --macvlan-config=/c.toml start id",
        ] {
            let found = call(line).unwrap_or_else(|| panic!("{line}"));
            // The same subcommand and the same argument list for runc as
            // the full wrapper's parser finds.
            let full = parse_invocation(
                &line
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            );
            let mut kept: Vec<String> = line.split_whitespace().map(String::from).collect();
            if let Some(own) = found.own {
                kept.drain(own.args());
            }
            assert_eq!(kept, full.runc_args, "{line}");
            if let Some(own) = found.own {
                let args: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
                let value = own_value(&args, own);
                assert_eq!(
                    Some(std::path::Path::new(std::str::from_utf8(value).unwrap())),
                    full.config.as_deref(),
                    "{line}"
                );
            }
            let shift = found
                .own
                .filter(|o| o.at < found.subcommand)
                .map_or(0, |o| o.args().len());
            assert_eq!(Some(found.subcommand - shift), full.subcommand, "{line}");
        }
    }

    #[test]
    fn leaves_everything_else_to_the_full_wrapper() {
        for line in [
            "create --bundle /b id",
            "--root /r run id",
            "--root /r",
            "-- start id",
            "--macvlan-config /a --macvlan-config /b start id",
            "--macvlan-config",
            "",
        ] {
            assert_eq!(call(line), None, "{line}");
        }
    }

    #[test]
    fn reads_runtime_from_plain_config_files() {
        let cases: [(&str, Toml); 9] = [
            ("", Toml::Absent),
            ("# only a comment\n\n", Toml::Absent),
            ("runtime = \"/usr/sbin/runc\"\n", Toml::Str(b"/usr/sbin/runc")),
            (
                "store = '/var/lib/x.db'\ndebug = true # c\r\nruntime='crun' # real one\n[policy]\nruntime = \"no\"\n",
                Toml::Str(b"crun"),
            ),
            ("[daemon]\nruntime_dir = \"/run/x\"\n", Toml::Absent),
            ("host_id = 7\nlog = \"stderr\"\n", Toml::Absent),
            ("runtime = \"a\\tb\"\n", Toml::Unsure),
            ("x = [\n  [1],\n]\nruntime = \"r\"\n", Toml::Unsure),
            ("runtime.x = \"r\"\n", Toml::Unsure),
        ];
        for (text, want) in cases {
            assert_eq!(runtime(text.as_bytes()), want, "{text:?}");
        }
        for text in [
            "\"runtime\" = \"r\"\n",
            "runtime = \"r\"\nruntime = \"s\"\n",
            "runtime = \"\"\n",
            "runtime = true\n",
            "x = \"\"\"\nruntime = \"r\"\n\"\"\"\n",
            "\u{feff}runtime = \"r\"\n",
            "runtime = \"r\" x\n",
            "runtime = \"r\n",
            "runtime = \"/opt/r\u{e9}\"\n",
        ] {
            assert_eq!(runtime(text.as_bytes()), Toml::Unsure, "{text:?}");
        }
    }

    #[test]
    fn escapes_json_strings_as_a_json_parser_reads_them() {
        let cases: [&[u8]; 5] = [
            b"",
            b"plain",
            b"{\"id\":\"a\\b\"}\n\t\r\x01\x1f\x7f end",
            "caf\u{e9} \u{1F600}".as_bytes(),
            b"\"\"\\\\",
        ];
        for bytes in cases {
            let mut out = b"\"".to_vec();
            json_escaped(bytes, &mut |piece| out.extend_from_slice(piece));
            out.push(b'"');
            let back: String = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(&out)));
            assert_eq!(back.as_bytes(), bytes);
        }
        let mut digits = [0u8; 20];
        for n in [0, 7, 10, 4026531840, u64::MAX] {
            assert_eq!(decimal(n, &mut digits), n.to_string().as_bytes());
        }
    }

    /// Where the reader is sure, a TOML parser reads the same value; it
    /// reads the shipped config file.
    #[test]
    fn lookups_agree_with_a_toml_parser() {
        let shipped = include_str!("../../config/config.toml");
        let texts = [
            shipped,
            "a = [\n  \"x\", # c\n  'y',\n]\n[daemon]\nruntime_dir = \"/r\" # c\nidle_exit = \"1s\"\n[gc]\nx = []\n",
            "[daemon]\n[policy]\nruntime_dir = \"/not\"\n",
            "debug = true\n[daemon]\nruntime_dir='/run/q'\n",
        ];
        let keys = [
            ("", "debug"),
            ("daemon", "runtime_dir"),
            ("", "runtime"),
            ("gc", "stopped_retention"),
        ];
        for text in texts {
            let parsed: toml::Table = text.parse().unwrap();
            for (table, key) in keys {
                let place = if table.is_empty() {
                    Some(&parsed)
                } else {
                    parsed.get(table).and_then(|t| t.as_table())
                };
                let want = place.and_then(|t| t.get(key));
                match lookup(text.as_bytes(), table.as_bytes(), key.as_bytes()) {
                    Toml::Str(v) => {
                        let want = want.and_then(|w| w.as_str()).map(str::as_bytes);
                        assert_eq!(want, Some(v), "{text:?} {key}");
                    }
                    Toml::Token(v) => {
                        let want = want.map(|w| w.to_string().into_bytes());
                        assert_eq!(want, Some(v.to_vec()), "{text:?} {key}");
                    }
                    Toml::Absent => assert!(want.is_none(), "{text:?} {key}"),
                    Toml::Unsure => panic!("{text:?} {key}"),
                }
            }
        }
        for text in [
            "[daemon.x]\nruntime_dir = \"/r\"\n",
            "[[daemon]]\n",
            "[ daemon ]\n",
            "a = [[1], [2]]\n",
            "a = [\"x\"\n",
            "a = { b = 1 }\n",
            "a = [\"x\"] y\n",
            "[daemon]\nruntime_dir = [\"/r\"]\n",
            "[daemon]\nruntime_dir = \"/r\"\nruntime_dir = \"/s\"\n",
            "x = '''\n[daemon]\nruntime_dir = \"/r\"\n'''\n",
        ] {
            let found = lookup(text.as_bytes(), b"daemon", b"runtime_dir");
            assert_eq!(found, Toml::Unsure, "{text:?}");
        }
    }

    #[test]
    fn looks_keys_up_in_tables() {
        let text = "log = \"stderr\"\ndebug = false\n[daemon]\nruntime_dir = \"/tmp/eh/run\"\n";
        assert_eq!(
            lookup(text.as_bytes(), b"", b"debug"),
            Toml::Token(b"false")
        );
        assert_eq!(
            lookup(text.as_bytes(), b"daemon", b"runtime_dir"),
            Toml::Str(b"/tmp/eh/run")
        );
        assert_eq!(lookup(text.as_bytes(), b"daemon", b"debug"), Toml::Absent);
    }

    #[test]
    fn agrees_with_the_config_parser_where_it_is_sure() {
        for text in [
            "runtime = \"/opt/runc\"\n[policy]\nallow_env = true\n",
            "store = \"sqlite:///tmp/s.db\"\n",
            "runtime = 'crun'\n",
        ] {
            let config = crate::config::Config::parse(text).unwrap();
            match runtime(text.as_bytes()) {
                Toml::Str(value) => assert_eq!(value, config.runtime.as_bytes()),
                Toml::Absent => assert_eq!(config.runtime, "runc"),
                Toml::Unsure | Toml::Token(_) => panic!("{text:?}"),
            }
        }
    }
}
