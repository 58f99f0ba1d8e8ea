//! Small files replaced atomically: write a temp file, fsync it, rename it over the
//! old one, fsync the directory. A crash leaves the old or the new version, never a
//! mix. Blocking std I/O: for rare writes (metadata, checkpoints), run on a blocking
//! pool or at startup.

use std::io::{self, Write};
use std::path::Path;

pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
