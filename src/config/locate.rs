//! Where a command finds its config when `-c` is not given: the variable
//! named for it, then the current folder, then where the package keeps it.
//! A VPS admin types `sudo drawbridge tunnel add home` from their home
//! folder, and the packaged config is what they mean.

use std::path::{Path, PathBuf};

/// The places one kind of config is looked for, in order.
#[derive(Debug, Clone, Copy)]
pub struct SearchPath {
    /// The environment variable that names the file.
    pub env: &'static str,
    /// The file name looked for in the current folder.
    pub local: &'static str,
    /// Where the package keeps it.
    pub system: &'static str,
}

/// The edge's config (`run`, `check`, `bans`, `tunnel`, …).
pub const EDGE: SearchPath = SearchPath {
    env: "DRAWBRIDGE_CONFIG",
    local: "drawbridge.toml",
    system: "/etc/drawbridge/drawbridge.toml",
};

/// The agent's config (`agent`, `agent enroll`).
pub const AGENT: SearchPath = SearchPath {
    env: "DRAWBRIDGE_AGENT_CONFIG",
    local: "agent.toml",
    system: "/etc/drawbridge/agent.toml",
};

/// No config in any of the places looked at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no config found: looked for {}; name one with -c FILE or the {env} variable", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))]
pub struct NotFound {
    /// Every file looked for.
    pub tried: Vec<PathBuf>,
    /// The variable that would have named it.
    pub env: &'static str,
}

impl SearchPath {
    /// The config to read: `given` (`-c`), else the variable's file, else
    /// the first of the local and the packaged file that exists.
    pub fn find(&self, given: Option<&Path>) -> Result<PathBuf, NotFound> {
        let env = std::env::var_os(self.env).filter(|v| !v.is_empty());
        self.find_with(given, env.map(PathBuf::from), |p| p.exists())
    }

    /// The file `agent enroll` writes: the one `find` would read, else
    /// the packaged place when the package's folder is there (so the
    /// packaged unit finds it), else the current folder.
    pub fn for_writing(&self, given: Option<&Path>) -> PathBuf {
        self.find(given).unwrap_or_else(|_| {
            let system = Path::new(self.system);
            match system.parent() {
                Some(folder) if folder.is_dir() => system.to_path_buf(),
                _ => PathBuf::from(self.local),
            }
        })
    }

    fn find_with(
        &self,
        given: Option<&Path>,
        env: Option<PathBuf>,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<PathBuf, NotFound> {
        if let Some(given) = given.map(Path::to_path_buf).or(env) {
            // Named: read it, and let the read say what is wrong.
            return Ok(given);
        }
        let tried = vec![PathBuf::from(self.local), PathBuf::from(self.system)];
        match tried.iter().find(|p| exists(p)) {
            Some(found) => Ok(found.clone()),
            None => Err(NotFound {
                tried,
                env: self.env,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{NotFound, EDGE};
    use std::path::{Path, PathBuf};

    #[test]
    fn given_then_variable_then_here_then_the_packaged_place() {
        let none = |_: &Path| false;
        let here = |p: &Path| p == Path::new("drawbridge.toml");
        let etc = |p: &Path| p == Path::new("/etc/drawbridge/drawbridge.toml");
        let given = Some(Path::new("my.toml"));
        let env = Some(PathBuf::from("/srv/db.toml"));
        assert_eq!(
            EDGE.find_with(given, env.clone(), none),
            Ok("my.toml".into())
        );
        assert_eq!(EDGE.find_with(None, env, none), Ok("/srv/db.toml".into()));
        assert_eq!(
            EDGE.find_with(None, None, here),
            Ok("drawbridge.toml".into())
        );
        assert_eq!(
            EDGE.find_with(None, None, etc),
            Ok("/etc/drawbridge/drawbridge.toml".into())
        );
        let missing = EDGE.find_with(None, None, none).unwrap_err();
        assert_eq!(
            missing,
            NotFound {
                tried: vec![
                    "drawbridge.toml".into(),
                    "/etc/drawbridge/drawbridge.toml".into()
                ],
                env: "DRAWBRIDGE_CONFIG"
            }
        );
        assert_eq!(
            missing.to_string(),
            "no config found: looked for drawbridge.toml and /etc/drawbridge/drawbridge.toml; name one with -c FILE or the DRAWBRIDGE_CONFIG variable"
        );
    }
}
