//! Where `kubectl nodeshell` finds its gateway and keeps its sign-in: `--gateway`, then
//! `NODESHELL_GATEWAY`, then `gateway:` in `$XDG_CONFIG_HOME/nodeshell/config.yaml`, then the
//! gateway of the stored sign-in. The sign-in (a session handle, never a token) is kept in
//! `$XDG_CONFIG_HOME/nodeshell/session.json`, readable by its owner only (0600).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::errors::{CliError, codes};

/// The config file's name in the config directory.
pub const CONFIG_FILE: &str = "config.yaml";
/// The sign-in file's name in the config directory.
pub const SESSION_FILE: &str = "session.json";

/// `$XDG_CONFIG_HOME/nodeshell`, else `$HOME/.config/nodeshell`.
pub fn config_dir() -> Result<PathBuf, CliError> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("nodeshell"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".config").join("nodeshell"))
        .ok_or_else(|| CliError::local("neither XDG_CONFIG_HOME nor HOME is set"))
}

/// The config file: only the gateway address today.
#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    /// The gateway's address, `https://nodeshell.example.com`.
    pub gateway: Option<String>,
}

/// The stored sign-in: which gateway, and the handle it gave.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The gateway's base URL the handle belongs to.
    pub gateway: String,
    /// The session handle (`Authorization: Nodeshell-Session <handle>`).
    pub session: String,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// Reads the config file in `dir` (absent: empty).
pub fn read_config(dir: &Path) -> Result<ConfigFile, CliError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_saphyr::from_str(&text)
            .map_err(|e| CliError::local(format!("{} is not valid: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(CliError::local(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Reads the stored sign-in in `dir` (absent: none).
pub fn read_session(dir: &Path) -> Result<Option<StoredSession>, CliError> {
    let path = dir.join(SESSION_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CliError::local(format!(
                "{} is not valid ({e}); remove it and sign in again",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::local(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Stores the sign-in in `dir` (created 0700) as a file only its owner can read (0600),
/// replacing any earlier one.
pub fn write_session(dir: &Path, session: &StoredSession) -> Result<(), CliError> {
    let local = |e: std::io::Error| {
        CliError::local(format!(
            "cannot store the sign-in in {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(local)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(local)?;
    let path = dir.join(SESSION_FILE);
    let tmp = dir.join(format!(".{SESSION_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(local)?;
    let body = serde_json::to_vec(session).map_err(|e| CliError::local(e.to_string()))?;
    file.write_all(&body).map_err(local)?;
    file.sync_all().map_err(local)?;
    std::fs::rename(&tmp, &path).map_err(local)?;
    Ok(())
}

/// Removes the stored sign-in in `dir`, if any.
pub fn remove_session(dir: &Path) -> Result<(), CliError> {
    match std::fs::remove_file(dir.join(SESSION_FILE)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::local(format!("cannot remove the sign-in: {e}"))),
    }
}

/// A gateway address as the base URL the CLI calls: http(s), no path, query or fragment,
/// no trailing slash.
pub fn gateway_base(text: &str) -> Result<String, CliError> {
    let url = url::Url::parse(text.trim()).map_err(|e| {
        CliError::new(
            codes::NO_GATEWAY,
            format!("the gateway address {text:?} is not a URL ({e})"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(CliError::new(
            codes::NO_GATEWAY,
            format!("the gateway address {text:?} must be http:// or https://"),
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// The gateway to call: the first of `flag` (also `NODESHELL_GATEWAY`), the config file's,
/// the stored sign-in's.
pub fn choose_gateway(
    flag: Option<&str>,
    config: &ConfigFile,
    stored: Option<&StoredSession>,
) -> Result<String, CliError> {
    let chosen = flag
        .map(str::to_string)
        .or_else(|| config.gateway.clone())
        .or_else(|| stored.map(|s| s.gateway.clone()))
        .ok_or_else(|| CliError::new(codes::NO_GATEWAY, "no gateway address is known"))?;
    gateway_base(&chosen)
}

/// The stored handle, but only for the gateway that gave it: a handle is never sent to
/// another address.
pub fn handle_for<'a>(gateway: &str, stored: Option<&'a StoredSession>) -> Option<&'a str> {
    stored
        .filter(|s| gateway_base(&s.gateway).ok().as_deref() == Some(gateway))
        .map(|s| s.session.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stored(gateway: &str) -> StoredSession {
        StoredSession {
            gateway: gateway.into(),
            session: "h".into(),
        }
    }

    #[test]
    fn the_flag_wins_then_the_file_then_the_sign_in() {
        let file = ConfigFile {
            gateway: Some("https://file.example/".into()),
        };
        let s = stored("https://signed.example");
        assert_eq!(
            choose_gateway(Some("http://127.0.0.1:8080/x"), &file, Some(&s)).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            choose_gateway(None, &file, Some(&s)).unwrap(),
            "https://file.example"
        );
        assert_eq!(
            choose_gateway(None, &ConfigFile::default(), Some(&s)).unwrap(),
            "https://signed.example"
        );
        let none = choose_gateway(None, &ConfigFile::default(), None).unwrap_err();
        assert_eq!(none.code, codes::NO_GATEWAY);
        assert!(choose_gateway(Some("ftp://x"), &file, None).is_err());
    }

    #[test]
    fn a_handle_goes_only_to_its_own_gateway() {
        let s = stored("https://a.example/");
        assert_eq!(handle_for("https://a.example", Some(&s)), Some("h"));
        assert_eq!(handle_for("https://b.example", Some(&s)), None);
        assert_eq!(handle_for("https://a.example", None), None);
    }

    #[test]
    fn the_sign_in_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("nodeshell");
        let s = stored("https://a.example");
        write_session(&dir, &s).unwrap();
        let mode = std::fs::metadata(dir.join(SESSION_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(read_session(&dir).unwrap(), Some(s));
        assert!(!format!("{:?}", read_session(&dir).unwrap()).contains("\"h\""));
        remove_session(&dir).unwrap();
        assert_eq!(read_session(&dir).unwrap(), None);
    }

    #[test]
    fn the_config_file_names_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "gateway: https://g.example\n").unwrap();
        assert_eq!(
            read_config(dir.path()).unwrap().gateway.as_deref(),
            Some("https://g.example")
        );
    }
}
