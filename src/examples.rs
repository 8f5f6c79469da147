//! The examples shipped inside the binary (`--example NAME`), so that a
//! newcomer's first command needs no file and no cluster.

/// An example spec with its saved live state and the files it names.
pub struct Example {
    pub name: &'static str,
    pub spec: &'static str,
    pub live: &'static str,
    /// (path as written in the spec, contents)
    pub files: &'static [(&'static str, &'static str)],
}

pub const EXAMPLES: &[Example] = &[
    Example {
        name: "healthcare",
        spec: include_str!("../examples/healthcare/pgplan.yaml"),
        live: include_str!("../examples/healthcare/live.yaml"),
        files: &[],
    },
    Example {
        name: "backstage-to-rds",
        spec: include_str!("../examples/backstage-to-rds/pgplan.yaml"),
        live: include_str!("../examples/backstage-to-rds/live.yaml"),
        files: &[(
            "rds-ca.pem",
            include_str!("../examples/backstage-to-rds/rds-ca.pem"),
        )],
    },
    Example {
        name: "pyairtable",
        spec: include_str!("../examples/pyairtable/pgplan.yaml"),
        live: include_str!("../examples/pyairtable/live.yaml"),
        files: &[],
    },
];

pub fn find(name: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|e| e.name == name)
}

pub fn names() -> Vec<&'static str> {
    EXAMPLES.iter().map(|e| e.name).collect()
}
