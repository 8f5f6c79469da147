//! Diagnostics about a user's file: each one located, coded and with help.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use miette::{Diagnostic, LabeledSpan, MietteError, MietteSpanContents, SourceCode, SpanContents};

use crate::yaml::{Span, YamlError};

/// A file as read, shared by every diagnostic that points into it.
#[derive(Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
    /// Byte offset of the start of each line, built when first needed.
    lines: Arc<OnceLock<Vec<usize>>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
            lines: Arc::default(),
        }
    }

    fn line_starts(&self) -> &[usize] {
        self.lines.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        })
    }

    /// 0-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts()
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// Byte range of a 0-based line, without its line break.
    fn line_bounds(&self, line: usize) -> (usize, usize) {
        let starts = self.line_starts();
        let start = starts.get(line).copied().unwrap_or(self.text.len());
        let end = starts
            .get(line + 1)
            .map_or(self.text.len(), |next| next - 1)
            .max(start);
        let end = if self.text[start..end].ends_with('\r') {
            end - 1
        } else {
            end
        };
        (start, end)
    }

    /// 1-based line and column of a byte offset (columns count characters).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line = self.line_of(offset);
        let start = self.line_starts().get(line).copied().unwrap_or(0);
        (line + 1, self.text[start..offset].chars().count() + 1)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFile")
            .field("name", &self.name)
            .finish()
    }
}

/// One located problem in a user's file.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
    pub span: Span,
    pub label: String,
    pub related: Option<(Span, String)>,
    pub file: SourceFile,
    /// Found by the structural check against the JSON Schema (so the
    /// schema is worth pointing at).
    pub schema: bool,
    /// What the diagnostic quotes of the file, built when it is rendered.
    excerpt: OnceLock<Excerpt>,
}

impl SpecError {
    pub fn new(
        file: &SourceFile,
        code: &'static str,
        message: impl Into<String>,
        span: Span,
    ) -> Self {
        SpecError {
            code,
            message: message.into(),
            help: None,
            span,
            label: "here".into(),
            related: None,
            file: file.clone(),
            schema: false,
            excerpt: OnceLock::new(),
        }
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self.excerpt = OnceLock::new();
        self
    }
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related = Some((span, label.into()));
        self.excerpt = OnceLock::new();
        self
    }
    pub fn from_yaml(file: &SourceFile, e: YamlError) -> Self {
        let mut err = SpecError::new(file, e.code, e.message, e.span);
        err.help = e.help;
        err.related = e.related;
        err
    }
    /// `file:line:col`, as editors and CI logs link it.
    pub fn location(&self) -> String {
        let (l, c) = self.file.line_col(self.span.start);
        format!("{}:{l}:{c}", self.file.name)
    }

    fn excerpt(&self) -> &Excerpt {
        self.excerpt.get_or_init(|| {
            let mut spans = vec![self.span];
            spans.extend(self.related.as_ref().map(|(s, _)| *s));
            Excerpt::new(&self.file, &spans)
        })
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), bounded(&self.message))
    }
}

impl std::error::Error for SpecError {}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_deref()
            .map(|h| Box::new(bounded(h)) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.excerpt() as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let excerpt = self.excerpt();
        let texts = std::iter::once(self.label.as_str())
            .chain(self.related.as_ref().map(|(_, l)| l.as_str()));
        let labels: Vec<LabeledSpan> = excerpt
            .spans
            .iter()
            .zip(texts)
            .enumerate()
            .filter_map(|(i, (span, text))| {
                let (start, end) = (*span)?;
                let label = Some(bounded(text).into_owned());
                let span = miette::SourceSpan::new(start.into(), end - start);
                Some(if i == 0 {
                    LabeledSpan::new_primary_with_span(label, span)
                } else {
                    LabeledSpan::new_with_span(label, span)
                })
            })
            .collect();
        Some(Box::new(labels.into_iter()))
    }
}

/// Longest run of non-blank characters a message quotes whole: a value
/// pasted into a message is cut in its middle beyond this.
const MAX_WORD_CHARS: usize = 96;
/// Longest message, help or label shown.
const MAX_MESSAGE_CHARS: usize = 300;

/// `text` with every overlong word cut in its middle and the whole cut at
/// its end, so that a message quoting a hostile value stays readable.
pub fn bounded(text: &str) -> Cow<'_, str> {
    let long_word = text
        .split(char::is_whitespace)
        .any(|w| w.len() > MAX_WORD_CHARS && w.chars().count() > MAX_WORD_CHARS);
    if !long_word && text.len() <= MAX_MESSAGE_CHARS {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut chars = 0;
    let mut rest = text;
    while !rest.is_empty() && chars <= MAX_MESSAGE_CHARS {
        let word_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_len);
        let n = word.chars().count();
        if n > MAX_WORD_CHARS {
            let head: String = word.chars().take(MAX_WORD_CHARS * 2 / 3).collect();
            let tail: String = word.chars().skip(n - MAX_WORD_CHARS / 6).collect();
            let omitted = n - MAX_WORD_CHARS * 2 / 3 - MAX_WORD_CHARS / 6;
            out.push_str(&format!("{head}…({omitted} characters)…{tail}"));
            chars += MAX_WORD_CHARS + 24;
        } else {
            out.push_str(word);
            chars += n;
        }
        let blank_len = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        out.push_str(&after[..blank_len]);
        chars += blank_len;
        rest = &after[blank_len..];
    }
    if !rest.is_empty() {
        out.push('…');
    }
    Cow::Owned(out)
}

/// Lines of context shown around a label (at least the handler's).
const CONTEXT_LINES: usize = 2;
/// A label over more lines than this is shown on its first line only.
const MAX_LABEL_LINES: usize = 8;
/// Characters of one line shown; longer lines are cut around the label.
const WINDOW_CHARS: usize = 160;
/// Characters shown before the label on a cut line.
const WINDOW_LEAD: usize = 40;

/// What a diagnostic quotes of its file: the lines around its labels, each
/// cut to a window of at most [`WINDOW_CHARS`] characters around the label,
/// as a small text of its own. It is the diagnostic's miette source: labels
/// are given in its coordinates, and it reports the file's own line and
/// column numbers, so what is printed is bounded whatever the file holds
/// (miette's padding arithmetic panics beyond 65,535 columns).
#[derive(Debug, Clone)]
struct Excerpt {
    name: String,
    text: String,
    lines: Vec<ExcerptLine>,
    /// The primary and related spans in excerpt coordinates; `None` when a
    /// label falls outside the window of its line.
    spans: Vec<Option<(usize, usize)>>,
}

#[derive(Debug, Clone)]
struct ExcerptLine {
    /// Where the line starts and ends in the excerpt (the end excludes the
    /// line break).
    start: usize,
    end: usize,
    /// Where the file's text starts in it (after a leading ellipsis).
    body: usize,
    /// Lines of one group are consecutive in the file.
    group: usize,
    /// 0-based line in the file.
    line: usize,
    /// The window's bytes in the file.
    file_start: usize,
    file_end: usize,
    /// Characters of the file's line before the window.
    col: usize,
}

impl ExcerptLine {
    /// Excerpt offset of a file offset on this line, clamped to the window.
    fn map(&self, file_offset: usize) -> usize {
        self.body + file_offset.clamp(self.file_start, self.file_end) - self.file_start
    }
    fn shows(&self, file_offset: usize) -> bool {
        (self.file_start..=self.file_end).contains(&file_offset)
    }
}

impl Excerpt {
    fn new(file: &SourceFile, spans: &[Span]) -> Excerpt {
        let text: &str = &file.text;
        let clamp = |o: usize| floor_char_boundary(text, o.min(text.len()));
        let last_line = file.line_starts().len() - 1;
        // Each label, its end cut to its first line when it covers many.
        let labels: Vec<(usize, usize, usize)> = spans
            .iter()
            .map(|s| {
                let start = clamp(s.start);
                let line = file.line_of(start);
                let mut end = clamp(s.end).max(start);
                let end_line = file.line_of(end.saturating_sub(1).max(start));
                if end_line > line + MAX_LABEL_LINES {
                    end = file.line_bounds(line).1.max(start);
                }
                (start, end, line)
            })
            .collect();
        let mut ranges: Vec<(usize, usize)> = labels
            .iter()
            .map(|&(_, end, line)| {
                let end_line = file.line_of(end.saturating_sub(1).max(file.line_starts()[line]));
                (
                    line.saturating_sub(CONTEXT_LINES),
                    (end_line.max(line) + CONTEXT_LINES).min(last_line),
                )
            })
            .collect();
        ranges.sort_unstable();
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for (first, last) in ranges {
            match groups.last_mut() {
                Some(g) if first <= g.1 + 1 => g.1 = g.1.max(last),
                _ => groups.push((first, last)),
            }
        }

        let mut out = String::new();
        let mut lines = Vec::new();
        for (group, &(first, last)) in groups.iter().enumerate() {
            for line in first..=last {
                let (ls, le) = file.line_bounds(line);
                // The window follows the primary label, else the first
                // label on the line, else the line's start.
                let anchor = labels
                    .iter()
                    .map(|&(s, _, _)| s)
                    .find(|&s| (ls..=le).contains(&s))
                    .unwrap_or(ls);
                let (ws, we, col) = window(&text[ls..le], anchor - ls);
                let start = out.len();
                if ws > 0 {
                    out.push('…');
                }
                let body = out.len();
                // A lone carriage return would start a new line in miette.
                out.extend(text[ls + ws..ls + we].chars().map(|c| match c {
                    '\r' => ' ',
                    c => c,
                }));
                let end_body = out.len();
                if we < le - ls {
                    out.push('…');
                }
                let end = out.len();
                out.push('\n');
                debug_assert_eq!(end_body - body, we - ws);
                lines.push(ExcerptLine {
                    start,
                    end,
                    body,
                    group,
                    line,
                    file_start: ls + ws,
                    file_end: ls + we,
                    col,
                });
            }
        }
        let line_at = |file_offset: usize| -> Option<&ExcerptLine> {
            let l = file.line_of(file_offset);
            lines.iter().find(|x| x.line == l)
        };
        let spans = labels
            .iter()
            .map(|&(start, end, _)| {
                let first = line_at(start)?;
                if !first.shows(start) {
                    return None;
                }
                let s = first.map(start);
                let e = match line_at(end) {
                    Some(l) if l.group == first.group && l.line >= first.line => l.map(end),
                    _ => first.map(first.file_end),
                };
                Some((s, e.max(s)))
            })
            .collect();
        Excerpt {
            name: file.name.clone(),
            text: out,
            lines,
            spans,
        }
    }

    /// Index of the excerpt line holding an excerpt offset.
    fn line_index(&self, offset: usize) -> usize {
        self.lines
            .partition_point(|l| l.start <= offset)
            .saturating_sub(1)
    }
}

/// The window of a line to show: (start, end) byte offsets in the line and
/// the number of characters before the start; the whole line when short.
fn window(line: &str, anchor: usize) -> (usize, usize, usize) {
    if line.len() <= WINDOW_CHARS || line.chars().count() <= WINDOW_CHARS {
        return (0, line.len(), 0);
    }
    let anchor = floor_char_boundary(line, anchor.min(line.len()));
    let total = line.chars().count();
    let before = line[..anchor].chars().count();
    let first = before.saturating_sub(WINDOW_LEAD).min(total - WINDOW_CHARS);
    let byte_at = |chars: usize| {
        line.char_indices()
            .nth(chars)
            .map_or(line.len(), |(b, _)| b)
    };
    (byte_at(first), byte_at(first + WINDOW_CHARS), first)
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        if self.lines.is_empty() {
            return Err(MietteError::OutOfBounds);
        }
        let i = self.line_index(span.offset());
        let mut j = self.line_index((span.offset() + span.len()).saturating_sub(1));
        let group = self.lines[i].group;
        if j < i || self.lines[j].group != group {
            j = i;
        }
        let group_first = self.lines[..=i]
            .iter()
            .rposition(|l| l.group != group)
            .map_or(0, |p| p + 1);
        let group_last = self.lines[j..]
            .iter()
            .position(|l| l.group != group)
            .map_or(self.lines.len() - 1, |p| j + p - 1);
        let first = i.saturating_sub(context_lines_before).max(group_first);
        let last = (j + context_lines_after).min(group_last);
        let start = self.lines[first].start;
        let end = self.lines[last].end + 1;
        let line = &self.lines[i];
        let column = if context_lines_before == 0 {
            let at = span.offset().clamp(line.body, line.end.max(line.body));
            let shown_end = line.body + (line.file_end - line.file_start);
            line.col + self.text[line.body..at.min(shown_end)].chars().count()
        } else {
            0
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            &self.text.as_bytes()[start..end],
            miette::SourceSpan::new(start.into(), end - start),
            self.lines[first].line,
            column,
            last - first + 1,
        )))
    }
}

/// At most this many of a file's errors are printed; the count says how
/// many there are.
pub const MAX_SHOWN: usize = 50;

/// Every problem found in one file, reported together.
#[derive(Debug, Clone)]
pub struct SpecErrors {
    pub file: SourceFile,
    pub errors: Vec<SpecError>,
    /// What failed: "… is not a valid pgplan file" or "cannot plan …".
    pub title: String,
    omitted: Omitted,
}

impl SpecErrors {
    pub fn new(file: &SourceFile, mut errors: Vec<SpecError>) -> Self {
        errors.sort_by_key(|e| e.span.start);
        errors.dedup_by(|a, b| a.span == b.span && a.code == b.code && a.message == b.message);
        SpecErrors {
            title: format!("{} is not a valid pgplan file", file.name),
            file: file.clone(),
            omitted: Omitted(errors.len().saturating_sub(MAX_SHOWN)),
            errors,
        }
    }

    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Every text of every error with the redactor's values replaced: a
    /// message about an expanded value names its `${VAR}` (or says
    /// `(sensitive)`), never the value. The file they point into is the
    /// user's own text, with the references as written.
    pub fn redacted(mut self, r: &crate::redact::Redactor) -> Self {
        if r.is_empty() {
            return self;
        }
        self.title = r.text(&self.title);
        for e in &mut self.errors {
            e.message = r.text(&e.message);
            e.label = r.text(&e.label);
            e.help = e.help.as_deref().map(|h| r.text(h));
            if let Some((_, label)) = &mut e.related {
                *label = r.text(label);
            }
        }
        self
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = bounded(&self.title);
        match self.errors.len() {
            1 => write!(f, "{title}: 1 error"),
            n => write!(f, "{title}: {n} errors"),
        }
    }
}

impl std::error::Error for SpecErrors {}

impl Diagnostic for SpecErrors {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("pgplan::spec::invalid"))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        // The schema helps with the shape of a spec, not with a syntax
        // error, a bad name or a snapshot.
        self.errors.iter().any(|e| e.schema).then(|| {
            Box::new("`pgplan schema` prints the JSON Schema; docs/spec.md describes every field")
                as Box<dyn fmt::Display>
        })
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        let shown = self
            .errors
            .iter()
            .take(MAX_SHOWN)
            .map(|e| e as &dyn Diagnostic);
        let more = (self.omitted.0 > 0).then_some(&self.omitted as &dyn Diagnostic);
        Some(Box::new(shown.chain(more)))
    }
}

/// The note that ends a list cut at [`MAX_SHOWN`] errors.
#[derive(Debug, Clone)]
struct Omitted(usize);

impl fmt::Display for Omitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} more error(s) not shown; fix the ones above and run again",
            self.0
        )
    }
}

impl std::error::Error for Omitted {}

impl Diagnostic for Omitted {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miette::{GraphicalReportHandler, GraphicalTheme};

    fn render(e: &SpecError) -> String {
        let mut out = String::new();
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_wrap_lines(false)
            .render_report(&mut out, e)
            .expect("renders");
        out
    }

    #[test]
    fn far_apart_labels_keep_their_own_line_numbers() {
        let mut text = String::from("a: 1\nb: 2\n");
        for i in 0..600 {
            text.push_str(&format!("k{i}: v\n"));
        }
        text.push_str("a: 3\n");
        let file = SourceFile::new("f.yaml", text.as_str());
        let at = text.rfind("a: 3").unwrap();
        let e = SpecError::new(&file, "pgplan::test", "twice", Span::new(at, at + 1))
            .related(Span::new(0, 1), "first");
        let out = render(&e);
        assert!(out.contains("[f.yaml:603:1]"), "{out}");
        assert!(out.contains("603 │ a: 3"), "{out}");
        assert!(out.contains(" 1 │ a: 1"), "{out}");
        // Only the lines around each label, not the 600 between them.
        assert!(out.lines().count() < 20, "{out}");
    }

    #[test]
    fn a_label_far_right_on_a_long_line_is_shown_in_a_window() {
        let text = format!("x: {}: here\n", "é".repeat(70_000));
        let file = SourceFile::new("f.yaml", text.as_str());
        let at = text.find(": here").unwrap();
        let e = SpecError::new(&file, "pgplan::test", "odd", Span::new(at, at + 1));
        let out = render(&e);
        assert!(out.contains("[f.yaml:1:70004]"), "{out}");
        assert_eq!(e.location(), "f.yaml:1:70004");
        assert!(out.contains("…éé"), "{out}");
        assert!(out.contains("é: here"), "{out}");
        assert!(out.lines().all(|l| l.chars().count() < 200), "{out}");
    }

    #[test]
    fn a_label_over_many_lines_shows_its_first() {
        let text: String = (0..1000).map(|i| format!("k{i}: v\n")).collect();
        let file = SourceFile::new("f.yaml", text.as_str());
        let e = SpecError::new(&file, "pgplan::test", "all", Span::new(0, text.len()));
        let out = render(&e);
        assert!(out.contains("1 │ k0: v"), "{out}");
        assert!(!out.contains("k500"), "{out}");
    }

    #[test]
    fn long_words_are_cut_in_their_middle() {
        let long = "x".repeat(10_000);
        let message = format!("`{long}` is not a name");
        let cut = bounded(&message);
        assert!(cut.len() < 200, "{cut}");
        assert!(cut.contains("characters)"), "{cut}");
        assert!(cut.ends_with("` is not a name"), "{cut}");
        assert_eq!(bounded("short and sweet"), "short and sweet");
    }

    #[test]
    fn only_the_first_errors_are_printed() {
        let text = "a: 1\n".repeat(200);
        let file = SourceFile::new("f.yaml", text.as_str());
        let errors: Vec<SpecError> = (0..200)
            .map(|i| {
                SpecError::new(
                    &file,
                    "pgplan::test",
                    format!("e{i}"),
                    Span::new(i * 5, i * 5 + 1),
                )
            })
            .collect();
        let errors = SpecErrors::new(&file, errors);
        let mut out = String::new();
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &errors)
            .expect("renders");
        assert!(out.contains("200 errors"), "{out}");
        assert!(out.contains(": e49"), "{out}");
        assert!(!out.contains(": e50"), "{out}");
        assert!(out.contains("150 more error(s) not shown"), "{out}");
    }
}
