//! Fault injection for the bot's process: the `LD_PRELOAD` shim in `tests/faults/shim.c`, built here
//! with the machine's C compiler, makes chosen calls (fsync, write, rename, link, truncate) on chosen
//! paths fail while its control file says so (see the shim's header for the rule syntax).

use std::path::{Path, PathBuf};

pub struct FaultShim {
    pub library: PathBuf,
    pub control: PathBuf,
    _dir: tempfile::TempDir,
}

impl FaultShim {
    /// Compiles the shim into a temporary directory.
    pub fn build() -> FaultShim {
        let dir = tempfile::tempdir().unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/shim.c");
        let library = dir.path().join("libfault.so");
        let out = std::process::Command::new("cc")
            .args(["-Wall", "-Werror", "-shared", "-fPIC", "-o"])
            .arg(&library)
            .arg(&source)
            .arg("-ldl")
            .output()
            .expect("run cc (the fault tests build their LD_PRELOAD shim with the C compiler)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let control = dir.path().join("faults");
        FaultShim {
            library,
            control,
            _dir: dir,
        }
    }

    /// The settings that load the shim into a bot.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.library.display().to_string()),
            ("FAULT_CONTROL".into(), self.control.display().to_string()),
        ]
    }

    /// From now on, calls matching these rules (`<op> <errno> <pattern>`) fail.
    pub fn inject(&self, rules: &[String]) {
        let tmp = self.control.with_extension("tmp");
        std::fs::write(&tmp, rules.join("\n") + "\n").unwrap();
        std::fs::rename(&tmp, &self.control).unwrap();
    }

    /// Every call works again.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.control);
    }
}
