//! Regular expressions for string constraints (`pattern` and the `format`s grammars enforce),
//! compiled into a DFA over ASCII bytes plus one symbol that stands for any non-ASCII character.
//!
//! The syntax is the common subset of ECMA-262 regexes that JSON schemas use: literals and
//! escapes, `.`, `\d \w \s` (and negations), classes with ranges and negation, groups
//! (`(...)`, `(?:...)`), alternation, `* + ? {n} {n,} {n,m}` (lazy forms accepted; they match the
//! same strings), and `^`/`$` anchors at the ends. A pattern without `^` (or `$`) may be preceded
//! (or followed) by anything, as JSON Schema's search semantics say. Backreferences, lookaround,
//! word boundaries, Unicode classes and non-ASCII literals are refused.

/// Symbols: the 128 ASCII bytes, then `OTHER` for any non-ASCII character.
pub(crate) const OTHER: usize = 128;
const SYMBOLS: usize = 129;
/// No transition.
pub(crate) const DEAD: u16 = u16::MAX;
/// Limits, so a hostile pattern cannot make the compiler or the DFA large.
const MAX_NFA_STATES: usize = 20_000;
const MAX_DFA_STATES: usize = 4_000;
const MAX_REPEAT: u32 = 1_000;
/// Steps the subset construction may take (states visited in closures and moves): a pattern
/// that needs more is "too complex", refused in bounded time (tens of milliseconds) rather than
/// occupying a core while other requests wait. Every `format` pattern needs under a fifth of it.
const MAX_WORK: u64 = 5_000_000;

/// A deterministic automaton: `next[state][symbol]`, and which states accept.
#[derive(PartialEq, Eq)]
pub struct Dfa {
    next: Vec<[u16; SYMBOLS]>,
    accepting: Vec<bool>,
    /// The fewest characters from each state to an accepting one (`u32::MAX`: none).
    distance: Vec<u32>,
}

impl std::fmt::Debug for Dfa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dfa({} states)", self.next.len())
    }
}

impl Dfa {
    pub(crate) fn start(&self) -> u16 {
        0
    }

    /// The state after `symbol` (an ASCII byte, or `OTHER`), or `DEAD`.
    pub(crate) fn step(&self, state: u16, symbol: usize) -> u16 {
        self.next[state as usize][symbol]
    }

    pub(crate) fn accepts(&self, state: u16) -> bool {
        self.accepting[state as usize]
    }

    /// The fewest characters that still lead from `state` to a match.
    pub(crate) fn distance(&self, state: u16) -> u32 {
        self.distance[state as usize]
    }

    /// Whether `text` matches (for tests and checks).
    pub fn matches(&self, text: &str) -> bool {
        let mut state = self.start();
        for c in text.chars() {
            let symbol = if c.is_ascii() { c as usize } else { OTHER };
            state = self.step(state, symbol);
            if state == DEAD {
                return false;
            }
        }
        self.accepts(state)
    }
}

/// A set of symbols.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Set([u64; 3]);

impl Set {
    const EMPTY: Set = Set([0; 3]);

    fn all() -> Set {
        let mut set = Set::EMPTY;
        for s in 0..SYMBOLS {
            set.add(s);
        }
        set
    }

    fn add(&mut self, symbol: usize) {
        self.0[symbol / 64] |= 1 << (symbol % 64);
    }

    fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.add(b as usize);
        }
    }

    fn has(&self, symbol: usize) -> bool {
        self.0[symbol / 64] & (1 << (symbol % 64)) != 0
    }

    fn negate(&self) -> Set {
        let mut out = Set::EMPTY;
        for s in 0..SYMBOLS {
            if !self.has(s) {
                out.add(s);
            }
        }
        out
    }

    fn union(&mut self, other: Set) {
        for i in 0..3 {
            self.0[i] |= other.0[i];
        }
    }
}

#[derive(Clone)]
enum Ast {
    Set(Set),
    Concat(Vec<Ast>),
    Alt(Vec<Ast>),
    Repeat(Box<Ast>, u32, Option<u32>),
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

fn class_escape(c: char) -> Option<Set> {
    let mut set = Set::EMPTY;
    match c.to_ascii_lowercase() {
        'd' => set.add_range(b'0', b'9'),
        'w' => {
            set.add_range(b'a', b'z');
            set.add_range(b'A', b'Z');
            set.add_range(b'0', b'9');
            set.add(b'_' as usize);
        }
        's' => {
            for b in [b' ', b'\t', b'\n', b'\r', 0x0b, 0x0c] {
                set.add(b as usize);
            }
        }
        _ => return None,
    }
    Some(if c.is_ascii_uppercase() { set.negate() } else { set })
}

fn literal_escape(c: char) -> Result<u8, String> {
    Ok(match c {
        'n' => b'\n',
        't' => b'\t',
        'r' => b'\r',
        'f' => 0x0c,
        'v' => 0x0b,
        '0' => 0,
        c if c.is_ascii_punctuation() => c as u8,
        'b' | 'B' => return Err("word boundaries (\\b) are not supported".into()),
        c if c.is_ascii_digit() => return Err("backreferences are not supported".into()),
        'p' | 'P' => return Err("Unicode property classes are not supported".into()),
        c => return Err(format!("the escape \\{c} is not supported")),
    })
}

fn single(b: u8) -> Set {
    let mut set = Set::EMPTY;
    set.add(b as usize);
    set
}

fn ascii(c: char) -> Result<u8, String> {
    if c.is_ascii() {
        Ok(c as u8)
    } else {
        Err(format!("non-ASCII characters ({c:?}) in patterns are not supported"))
    }
}

impl Parser<'_> {
    fn alternation(&mut self) -> Result<Ast, String> {
        let mut branches = vec![self.concat()?];
        while self.chars.peek() == Some(&'|') {
            self.chars.next();
            branches.push(self.concat()?);
        }
        Ok(if branches.len() == 1 { branches.pop().expect("one branch") } else { Ast::Alt(branches) })
    }

    fn concat(&mut self) -> Result<Ast, String> {
        let mut items = Vec::new();
        while let Some(&c) = self.chars.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(Ast::Concat(items))
    }

    fn number(&mut self) -> Option<u32> {
        let mut digits = String::new();
        while let Some(c) = self.chars.peek().filter(|c| c.is_ascii_digit()) {
            digits.push(*c);
            self.chars.next();
        }
        digits.parse().ok()
    }

    fn quantified(&mut self, atom: Ast) -> Result<Ast, String> {
        let (min, max) = match self.chars.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.chars.next();
                let min = self.number().ok_or("a {n,m} repetition needs a number")?;
                let max = match self.chars.next() {
                    Some('}') => Some(min),
                    Some(',') if self.chars.peek() == Some(&'}') => {
                        self.chars.next();
                        None
                    }
                    Some(',') => {
                        let max = self.number().ok_or("a {n,m} repetition needs a number")?;
                        if self.chars.next() != Some('}') {
                            return Err("an unclosed {n,m} repetition".into());
                        }
                        Some(max)
                    }
                    _ => return Err("an unclosed {n,m} repetition".into()),
                };
                if max.is_some_and(|m| m < min) || min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
                    return Err(format!("repetition bounds must be ordered and at most {MAX_REPEAT}"));
                }
                if self.chars.peek() == Some(&'?') {
                    self.chars.next();
                }
                return self.quantified(Ast::Repeat(Box::new(atom), min, max));
            }
            _ => return Ok(atom),
        };
        self.chars.next();
        if self.chars.peek() == Some(&'?') {
            self.chars.next(); // lazy: the same set of strings
        }
        self.quantified(Ast::Repeat(Box::new(atom), min, max))
    }

    fn atom(&mut self) -> Result<Ast, String> {
        let c = self.chars.next().ok_or("an unexpected end")?;
        Ok(match c {
            '(' => {
                if self.chars.peek() == Some(&'?') {
                    self.chars.next();
                    match self.chars.next() {
                        Some(':') => {}
                        _ => return Err("lookaround and named groups are not supported".into()),
                    }
                }
                let inner = self.alternation()?;
                if self.chars.next() != Some(')') {
                    return Err("an unclosed group".into());
                }
                inner
            }
            '[' => Ast::Set(self.class()?),
            '.' => Ast::Set(single(b'\n').negate()),
            '\\' => {
                let e = self.chars.next().ok_or("a trailing backslash")?;
                match class_escape(e) {
                    Some(set) => Ast::Set(set),
                    None => Ast::Set(single(literal_escape(e)?)),
                }
            }
            '^' | '$' => return Err("anchors are supported only at the start and end of the pattern".into()),
            '*' | '+' | '?' | '{' => return Err(format!("nothing to repeat before {c:?}")),
            c => Ast::Set(single(ascii(c)?)),
        })
    }

    fn class(&mut self) -> Result<Set, String> {
        let mut set = Set::EMPTY;
        let negated = self.chars.peek() == Some(&'^');
        if negated {
            self.chars.next();
        }
        let mut first = true;
        loop {
            let c = self.chars.next().ok_or("an unclosed character class")?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = match c {
                '\\' => {
                    let e = self.chars.next().ok_or("a trailing backslash")?;
                    if let Some(class) = class_escape(e) {
                        set.union(class);
                        continue;
                    }
                    literal_escape(e)?
                }
                c => ascii(c)?,
            };
            let mut ahead = self.chars.clone();
            if ahead.next() == Some('-') && ahead.peek().is_some_and(|c| *c != ']') {
                self.chars.next();
                let hi = match self.chars.next().expect("peeked") {
                    '\\' => literal_escape(self.chars.next().ok_or("a trailing backslash")?)?,
                    c => ascii(c)?,
                };
                if hi < lo {
                    return Err("a character range out of order".into());
                }
                set.add_range(lo, hi);
            } else {
                set.add(lo as usize);
            }
        }
        Ok(if negated { set.negate() } else { set })
    }
}

/// A Thompson NFA: per state, symbol edges and epsilon edges.
#[derive(Default)]
struct Nfa {
    edges: Vec<Vec<(Set, usize)>>,
    epsilon: Vec<Vec<usize>>,
}

impl Nfa {
    fn state(&mut self) -> Result<usize, String> {
        if self.edges.len() >= MAX_NFA_STATES {
            return Err("the pattern is too large".into());
        }
        self.edges.push(Vec::new());
        self.epsilon.push(Vec::new());
        Ok(self.edges.len() - 1)
    }

    /// Builds `ast` from `from`; returns the end state.
    fn build(&mut self, ast: &Ast, from: usize) -> Result<usize, String> {
        Ok(match ast {
            Ast::Set(set) => {
                let to = self.state()?;
                self.edges[from].push((*set, to));
                to
            }
            Ast::Concat(items) => {
                let mut at = from;
                for item in items {
                    at = self.build(item, at)?;
                }
                at
            }
            Ast::Alt(branches) => {
                let end = self.state()?;
                for branch in branches {
                    let start = self.state()?;
                    self.epsilon[from].push(start);
                    let out = self.build(branch, start)?;
                    self.epsilon[out].push(end);
                }
                end
            }
            Ast::Repeat(inner, min, max) => {
                let mut at = from;
                for _ in 0..*min {
                    at = self.build(inner, at)?;
                }
                match max {
                    None => {
                        let loop_start = self.state()?;
                        self.epsilon[at].push(loop_start);
                        let out = self.build(inner, loop_start)?;
                        self.epsilon[out].push(loop_start);
                        loop_start
                    }
                    Some(max) => {
                        let end = self.state()?;
                        self.epsilon[at].push(end);
                        for _ in *min..*max {
                            at = self.build(inner, at)?;
                            self.epsilon[at].push(end);
                        }
                        end
                    }
                }
            }
        })
    }

    /// Adds every state reachable by epsilon moves, in time linear in what it visits (a state
    /// is marked with the scratch's generation when added), and charges that to the budget.
    fn closure(&self, states: &mut Vec<usize>, scratch: &mut Scratch) -> Result<(), String> {
        scratch.generation += 1;
        scratch.mark.resize(self.epsilon.len(), 0);
        let generation = scratch.generation;
        states.retain(|s| std::mem::replace(&mut scratch.mark[*s], generation) != generation);
        let mut i = 0;
        while i < states.len() {
            for next in &self.epsilon[states[i]] {
                if std::mem::replace(&mut scratch.mark[*next], generation) != generation {
                    states.push(*next);
                }
            }
            scratch.work += 1 + self.epsilon[states[i]].len() as u64;
            i += 1;
        }
        if scratch.work > MAX_WORK {
            return Err("the pattern is too complex".into());
        }
        states.sort_unstable();
        Ok(())
    }
}

/// Reused buffers and the work done so far in one compilation.
#[derive(Default)]
struct Scratch {
    /// Per NFA state: the generation of the closure that last added it.
    mark: Vec<u32>,
    generation: u32,
    work: u64,
}

/// Compiles a JSON Schema `pattern` (search semantics unless anchored).
pub fn compile(pattern: &str) -> Result<Dfa, String> {
    let anchored_start = pattern.starts_with('^');
    let anchored_end = pattern.ends_with('$') && !pattern.ends_with("\\$");
    let body = &pattern[usize::from(anchored_start)..pattern.len() - usize::from(anchored_end)];
    let mut parser = Parser { chars: body.chars().peekable() };
    let ast = parser.alternation()?;
    if parser.chars.next().is_some() {
        return Err("an unmatched ')'".into());
    }
    let anything = Ast::Repeat(Box::new(Ast::Set(Set::all())), 0, None);
    let mut parts = Vec::new();
    if !anchored_start {
        parts.push(anything.clone());
    }
    parts.push(ast);
    if !anchored_end {
        parts.push(anything);
    }
    let mut nfa = Nfa::default();
    let start = nfa.state()?;
    let end = nfa.build(&Ast::Concat(parts), start)?;
    // Subset construction.
    let mut scratch = Scratch::default();
    let mut first = vec![start];
    nfa.closure(&mut first, &mut scratch)?;
    let mut sets: Vec<Vec<usize>> = vec![first.clone()];
    let mut ids: std::collections::HashMap<Vec<usize>, u16> = std::collections::HashMap::from([(first, 0)]);
    let mut dfa = Dfa { next: Vec::new(), accepting: Vec::new(), distance: Vec::new() };
    let mut i = 0;
    while i < sets.len() {
        let current = sets[i].clone();
        let mut row = [DEAD; SYMBOLS];
        for (symbol, slot) in row.iter_mut().enumerate() {
            scratch.work += current.len() as u64;
            let mut next: Vec<usize> = current.iter().flat_map(|s| nfa.edges[*s].iter().filter(|(set, _)| set.has(symbol)).map(|(_, to)| *to)).collect();
            if next.is_empty() {
                continue;
            }
            nfa.closure(&mut next, &mut scratch)?;
            *slot = match ids.get(&next) {
                Some(id) => *id,
                None => {
                    if sets.len() >= MAX_DFA_STATES {
                        return Err("the pattern is too complex".into());
                    }
                    let id = sets.len() as u16;
                    ids.insert(next.clone(), id);
                    sets.push(next);
                    id
                }
            };
        }
        dfa.next.push(row);
        dfa.accepting.push(current.contains(&end));
        i += 1;
    }
    // Distances to a match, breadth-first over the reversed edges; a state that cannot reach one
    // is dead, and edges into it are removed, so the grammar never enters a dead end.
    let n = dfa.next.len();
    let mut incoming: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, row) in dfa.next.iter().enumerate() {
        for to in row.iter().filter(|t| **t != DEAD) {
            incoming[*to as usize].push(from);
        }
    }
    dfa.distance = vec![u32::MAX; n];
    let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|s| dfa.accepting[*s]).collect();
    for s in &queue {
        dfa.distance[*s] = 0;
    }
    while let Some(s) = queue.pop_front() {
        for from in std::mem::take(&mut incoming[s]) {
            if dfa.distance[from] == u32::MAX {
                dfa.distance[from] = dfa.distance[s] + 1;
                queue.push_back(from);
            }
        }
    }
    if dfa.distance[0] == u32::MAX {
        return Err("the pattern matches nothing".into());
    }
    for row in dfa.next.iter_mut() {
        for to in row.iter_mut() {
            if *to != DEAD && dfa.distance[*to as usize] == u32::MAX {
                *to = DEAD;
            }
        }
    }
    Ok(dfa)
}

/// The pattern that enforces a `format`, for the formats whose every match is valid by the
/// usual checkers (dates exclude February 29, so no match is an impossible day), or `None`.
pub fn format_pattern(format: &str) -> Option<String> {
    const DATE: &str = r"[12]\d{3}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)";
    const TIME: &str = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)";
    const LABEL: &str = r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?";
    Some(match format {
        "date" => ["^", DATE, "$"].concat(),
        "time" => ["^", TIME, "$"].concat(),
        "date-time" => ["^", DATE, "T", TIME, "$"].concat(),
        "uuid" => r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$".to_owned(),
        "ipv4" => r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$".to_owned(),
        "email" => [r"^[a-z0-9_%+-]{1,24}(?:\.[a-z0-9_%+-]{1,24}){0,2}@", LABEL, r"(?:\.", LABEL, r"){0,2}\.[a-z]{2,10}$"].concat(),
        "hostname" => ["^", LABEL, r"(?:\.", LABEL, "){0,4}$"].concat(),
        "uri" => [r"^https?://", LABEL, r"(?:\.", LABEL, r"){0,4}(?:/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,40}){0,6}$"].concat(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_ecma_search_does() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("^[a-z]+$", &["abc"], &["", "aBc", "a1"]),
            ("a+", &["a", "xxaxx"], &["", "bcd"]),
            (r"^\d{3}-\d{4}$", &["555-1234"], &["5555-1234", "555-123"]),
            (r"^(?:foo|ba[rz])?\.x{1,2}$", &[".x", "foo.xx", "baz.x"], &["fo.x", "bar.xxx"]),
            (r"^[^@\s]+@[\w-]+\.[a-z]{2,}$", &["a.b@c-d.org"], &["a b@c.org", "a@b.c"]),
            (r"^.{2}$", &["é!", "ab"], &["a", "abc"]),
            (r"^\$\d+(\.\d\d)?$", &["$12", "$1.50"], &["$1.5", "12"]),
        ];
        for (pattern, good, bad) in cases {
            let dfa = compile(pattern).unwrap_or_else(|err| panic!("{pattern}: {err}"));
            for text in *good {
                assert!(dfa.matches(text), "{pattern} should match {text:?}");
            }
            for text in *bad {
                assert!(!dfa.matches(text), "{pattern} should not match {text:?}");
            }
        }
    }

    #[test]
    fn unsupported_syntax_is_named() {
        for (pattern, needle) in
            [(r"(a)\1", "backreferences"), ("(?=a)", "lookaround"), (r"\bword", "boundaries"), ("é", "non-ASCII"), ("a{3,1}", "ordered"), ("(a", "unclosed"), ("a)", "unmatched"), ("*a", "nothing to repeat"), (r"\p{L}", "Unicode")]
        {
            let err = compile(pattern).unwrap_err();
            assert!(err.contains(needle), "{pattern}: {err}");
        }
        assert!(compile("(a{1000}){1000}").is_err(), "huge patterns are refused");
        assert!(compile("^(a|b)*a(a|b){14}$").unwrap_err().contains("too complex"), "exponential DFAs are refused");
    }

    #[test]
    fn formats_accept_only_valid_values() {
        let date = compile(&format_pattern("date").unwrap()).unwrap();
        assert!(date.matches("2024-02-28") && date.matches("1999-12-31") && date.matches("2023-04-30"));
        assert!(!date.matches("2024-02-30") && !date.matches("2023-04-31") && !date.matches("2023-13-01") && !date.matches("2023-00-10"));
        let stamp = compile(&format_pattern("date-time").unwrap()).unwrap();
        assert!(stamp.matches("2024-05-01T12:30:00Z") && stamp.matches("2024-05-01T23:59:59.123+02:00"));
        assert!(!stamp.matches("2024-05-01 12:30:00Z") && !stamp.matches("2024-05-01T24:00:00Z") && !stamp.matches("2024-05-01T12:30:00"));
        let uuid = compile(&format_pattern("uuid").unwrap()).unwrap();
        assert!(uuid.matches("123e4567-e89b-12d3-a456-426614174000") && !uuid.matches("123e4567e89b12d3a456426614174000"));
        let email = compile(&format_pattern("email").unwrap()).unwrap();
        assert!(email.matches("jane.doe@example.com") && !email.matches("jane..doe@example.com") && !email.matches("a@-b.com"));
        assert!(format_pattern("ipv6").is_none());
    }

    #[test]
    fn r11_pathological_patterns_are_refused_in_bounded_work() {
        // Long chains of optional items: every closure spans thousands of NFA states, which the
        // old quadratic closure took minutes over.
        for pattern in ["^(?:a?){1000}(?:b?){1000}$", "(?:(?:a|b)?){1000}c(?:(?:a|b)?){1000}", "^(?:[a-z]?[0-9]?){999}$"] {
            match super::compile(pattern) {
                Ok(dfa) => assert!(dfa.matches("ab") || dfa.matches("c") || dfa.matches("a1"), "{pattern}"),
                Err(err) => assert!(err.contains("too complex"), "{pattern}: {err}"),
            }
        }
        // Ordinary patterns stay well inside the budget.
        for format in ["date", "time", "date-time", "uuid", "email", "ipv4", "hostname", "uri"] {
            let pattern = super::format_pattern(format).unwrap();
            assert!(super::compile(&pattern).is_ok(), "{format}");
        }
    }
}
