//! Diagnostics about a user's file: each one located, coded and with help.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

use crate::yaml::{Span, YamlError};

/// A file as read, shared by every diagnostic that points into it.
#[derive(Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
    named: Arc<NamedSource<Arc<str>>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        let text = text.into();
        let named = Arc::new(NamedSource::new(name.clone(), text.clone()).with_language("yaml"));
        SourceFile { name, text, named }
    }

    /// 1-based line and column of a byte offset (columns count characters).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
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
        }
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related = Some((span, label.into()));
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
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

impl std::error::Error for SpecError {}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.file.named.as_ref() as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            Some(self.label.clone()),
            self.span,
        )];
        if let Some((span, label)) = &self.related {
            labels.push(LabeledSpan::new_with_span(Some(label.clone()), *span));
        }
        Some(Box::new(labels.into_iter()))
    }
}

/// Every problem found in one file, reported together.
#[derive(Debug, Clone)]
pub struct SpecErrors {
    pub file: SourceFile,
    pub errors: Vec<SpecError>,
    /// What failed: "… is not a valid pgplan file" or "cannot plan …".
    pub title: String,
}

impl SpecErrors {
    pub fn new(file: &SourceFile, mut errors: Vec<SpecError>) -> Self {
        errors.sort_by_key(|e| e.span.start);
        errors.dedup_by(|a, b| a.span == b.span && a.code == b.code && a.message == b.message);
        SpecErrors {
            title: format!("{} is not a valid pgplan file", file.name),
            file: file.clone(),
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
        match self.errors.len() {
            1 => write!(f, "{}: 1 error", self.title),
            n => write!(f, "{}: {n} errors", self.title),
        }
    }
}

impl std::error::Error for SpecErrors {}

impl Diagnostic for SpecErrors {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("pgplan::spec::invalid"))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(
            "`pgplan schema` prints the JSON Schema; docs/spec.md describes every field",
        ))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.errors.iter().map(|e| e as &dyn Diagnostic)))
    }
}
