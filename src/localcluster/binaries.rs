//! Where the control-plane binaries are: built by `e2e/scripts/build-controlplane.sh` and
//! linked into `e2e/.bin`, or wherever `NODESHELL_CONTROLPLANE_BIN` points.

use std::path::{Path, PathBuf};

use super::Error;

/// Environment variable naming a directory with `etcd`, `kube-apiserver` and
/// `kube-controller-manager`.
pub const BIN_DIR_ENV: &str = "NODESHELL_CONTROLPLANE_BIN";

/// Paths of the control-plane executables.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager` (only checked when asked for).
    pub kube_controller_manager: PathBuf,
}

/// Finds the binaries: `explicit`, else `$NODESHELL_CONTROLPLANE_BIN`, else `e2e/.bin` under
/// the current directory, else `e2e/.bin` of the source tree this crate was built from.
pub fn locate(explicit: Option<&Path>, needs_controller_manager: bool) -> Result<Binaries, Error> {
    let candidates: Vec<PathBuf> = match explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(BIN_DIR_ENV).map(PathBuf::from))
    {
        Some(dir) => vec![dir],
        None => {
            let mut dirs = Vec::new();
            if let Ok(cwd) = std::env::current_dir() {
                dirs.push(cwd.join("e2e/.bin"));
            }
            let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/.bin");
            if !dirs.contains(&source_tree) {
                dirs.push(source_tree);
            }
            dirs
        }
    };
    for dir in &candidates {
        let binaries = Binaries {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
        };
        let complete = binaries.etcd.is_file()
            && binaries.kube_apiserver.is_file()
            && (!needs_controller_manager || binaries.kube_controller_manager.is_file());
        if complete {
            return Ok(binaries);
        }
    }
    Err(Error::BinariesMissing {
        searched: candidates,
        needs_controller_manager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_tell_how_to_build_them() {
        let dir = std::env::temp_dir().join("nodeshell-no-such-bin-dir");
        let message = locate(Some(&dir), true).expect_err("missing").to_string();
        assert!(
            message.contains("e2e/scripts/build-controlplane.sh"),
            "{message}"
        );
        assert!(message.contains("NODESHELL_CONTROLPLANE_BIN"), "{message}");
        assert!(message.contains("kube-controller-manager"), "{message}");
    }
}
