//! Uploads for imports (issue 13). An upload is written, as it arrives, to an unnamed file in the
//! spool directory (the data directory) and never held whole in memory; it is counted on the
//! way, so that past its byte limit it is refused at once. A JSON bulk body is also parsed as it
//! streams, one entry at a time and none kept, so an array with more entries than a job takes
//! is refused as soon as the first entry too many begins; the job later reads the entries back
//! from the file one by one. At most `max_concurrent_imports` imports and bulk jobs run at once
//! ([`ImportSlot`]), so that memory stays bounded whatever is sent.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};

use serde::de::{Deserializer as _, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::Directory;

/// Largest JSON body of `POST|PATCH /api/v2/bulk/users`, in bytes.
pub const MAX_BULK_BYTES: u64 = 64 * 1024 * 1024;
/// Most users one bulk job takes.
pub const MAX_BULK_ENTRIES: usize = 100_000;

/// What an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    /// A CSV file, at most [`crate::MAX_IMPORT_BYTES`].
    Csv,
    /// A JSON array of users, at most [`MAX_BULK_BYTES`] and [`MAX_BULK_ENTRIES`] entries.
    BulkUsers,
}

impl UploadKind {
    pub fn max_bytes(self) -> u64 {
        match self {
            UploadKind::Csv => crate::MAX_IMPORT_BYTES as u64,
            UploadKind::BulkUsers => MAX_BULK_BYTES,
        }
    }
}

/// Why an upload is refused.
#[derive(Debug)]
pub enum UploadRefusal {
    /// Larger than its kind's limit (HTTP 413); the limit in bytes.
    TooLarge(u64),
    /// Not what it should be (HTTP 400), naming the field (`body`).
    Invalid(Error),
    /// The spool file could not be written.
    Failed(Error),
}

/// A received upload, in its spool file (removed when this is dropped).
#[derive(Debug)]
pub struct Upload {
    pub(crate) file: File,
    pub bytes: u64,
    /// Entries of a JSON array (0 for CSV).
    pub entries: usize,
}

impl Upload {
    /// The whole upload, when it is no larger than `max` bytes (a preview keeps small files).
    pub fn contents_if_at_most(&mut self, max: u64) -> Option<Vec<u8>> {
        if self.bytes > max {
            return None;
        }
        let mut out = Vec::with_capacity(self.bytes as usize);
        self.file.seek(SeekFrom::Start(0)).ok()?;
        self.file.read_to_end(&mut out).ok()?;
        Some(out)
    }

    /// The file from its start.
    pub(crate) fn rewound(mut self) -> std::io::Result<File> {
        self.file.seek(SeekFrom::Start(0))?;
        Ok(self.file)
    }
}

/// Receives an upload chunk by chunk (see [`Directory::receive_upload`]).
pub struct UploadSink {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    worker: tokio::task::JoinHandle<Result<Upload, UploadRefusal>>,
}

impl UploadSink {
    /// Hands over the next chunk; false once the upload has been refused (then [`finish`] says
    /// why, and the rest of the body need not be read).
    ///
    /// [`finish`]: UploadSink::finish
    pub async fn send(&mut self, chunk: impl Into<Vec<u8>>) -> bool {
        match &self.tx {
            Some(tx) => tx.send(chunk.into()).await.is_ok(),
            None => false,
        }
    }

    /// The whole upload once its last chunk was sent, or why it is refused.
    pub async fn finish(mut self) -> Result<Upload, UploadRefusal> {
        self.tx = None;
        match self.worker.await {
            Ok(r) => r,
            Err(e) => Err(UploadRefusal::Failed(Error::Internal(format!("the upload worker failed: {e}")))),
        }
    }
}

/// A running import's hold on one of the `max_concurrent_imports` places; the place is free
/// again when the job ends (this is dropped).
#[derive(Debug)]
pub struct ImportSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Directory {
    /// A place for one more import or bulk job, if fewer than `max_concurrent_imports` run.
    pub fn try_import_slot(&self) -> Option<ImportSlot> {
        self.inner.imports.clone().try_acquire_owned().ok().map(ImportSlot)
    }

    /// Starts receiving an upload of `kind` into a spool file.
    pub fn receive_upload(&self, kind: UploadKind) -> UploadSink {
        let dir = self.config().spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        // A few chunks in flight: the body is read no faster than the disk takes it.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let worker = tokio::task::spawn_blocking(move || {
            let file = tempfile::tempfile_in(&dir).map_err(|e| {
                UploadRefusal::Failed(Error::Internal(format!("cannot create a spool file in {}: {e}", dir.display())))
            })?;
            receive(kind, file, rx)
        });
        UploadSink { tx: Some(tx), worker }
    }
}

/// The chunks of a body as one `Read`, each written to the spool file as it passes.
struct Tee {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    file: std::io::BufWriter<File>,
    bytes: u64,
    limit: u64,
    too_large: bool,
}

impl Read for Tee {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(c) => {
                    self.bytes += c.len() as u64;
                    if self.bytes > self.limit {
                        self.too_large = true;
                        return Err(std::io::Error::other("the upload is larger than its limit"));
                    }
                    self.file.write_all(&c)?;
                    self.chunk = c;
                    self.at = 0;
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn receive(kind: UploadKind, file: File, rx: mpsc::Receiver<Vec<u8>>) -> Result<Upload, UploadRefusal> {
    let limit = kind.max_bytes();
    let mut tee =
        Tee { rx, chunk: Vec::new(), at: 0, file: std::io::BufWriter::new(file), bytes: 0, limit, too_large: false };
    let failed = |e: std::io::Error| UploadRefusal::Failed(Error::Internal(format!("cannot write the upload: {e}")));
    let entries = match kind {
        UploadKind::Csv => {
            let copied = std::io::copy(&mut tee, &mut std::io::sink());
            if tee.too_large {
                return Err(UploadRefusal::TooLarge(limit));
            }
            copied.map_err(failed)?;
            0
        }
        UploadKind::BulkUsers => {
            let counted = count_entries(BufReader::with_capacity(64 * 1024, &mut tee), MAX_BULK_ENTRIES);
            if tee.too_large {
                return Err(UploadRefusal::TooLarge(limit));
            }
            let n = counted.map_err(|m| UploadRefusal::Invalid(Error::invalid("body", m)))?;
            // Whatever follows the array (whitespace) is read, so the file holds the whole body.
            std::io::copy(&mut tee, &mut std::io::sink()).map_err(failed)?;
            if tee.too_large {
                return Err(UploadRefusal::TooLarge(limit));
            }
            n
        }
    };
    let bytes = tee.bytes;
    let file = tee.file.into_inner().map_err(|e| failed(e.into_error()))?;
    Ok(Upload { file, bytes, entries })
}

/// Checks that `input` is one JSON array of at most `max` entries and counts them, keeping
/// none: parsing stops at the first entry too many.
pub fn count_entries(input: impl Read, max: usize) -> Result<usize, String> {
    struct Count {
        max: usize,
    }
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of users")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            // Each entry is parsed whole (so the job will read it back) and dropped at once.
            while seq.next_element::<Value>()?.is_some() {
                n += 1;
                if n > self.max {
                    return Err(serde::de::Error::custom(TooMany(self.max)));
                }
            }
            Ok(n)
        }
    }
    let mut de = serde_json::Deserializer::from_reader(input);
    let n = match (&mut de).deserialize_seq(Count { max }) {
        Ok(n) => n,
        Err(e) if e.to_string().starts_with(TOO_MANY) => {
            return Err(format!("at most {} users per job: entry {} is one too many", thousands(max), max + 1))
        }
        Err(e) if e.is_eof() && e.line() == 1 && e.column() == 0 => {
            return Err("a JSON request body is required".into())
        }
        Err(e) if e.is_data() => return Err("must be a JSON array of users".into()),
        Err(e) => return Err(format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column())),
    };
    de.end().map_err(|e| format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()))?;
    if n == 0 {
        return Err("the list of users is empty".into());
    }
    Ok(n)
}

const TOO_MANY: &str = "too many entries";

struct TooMany(usize);

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TOO_MANY} (more than {})", self.0)
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The entries of a JSON array in a file, parsed one at a time on a thread of their own and
/// handed over through a small queue: a job holds a few entries, not the array.
pub(crate) fn entries_of(file: File) -> impl Iterator<Item = Result<Value, String>> + Send {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Value, String>>(256);
    std::thread::spawn(move || {
        struct Each(std::sync::mpsc::SyncSender<Result<Value, String>>);
        impl<'de> Visitor<'de> for Each {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while let Some(v) = seq.next_element::<Value>()? {
                    if self.0.send(Ok(v)).is_err() {
                        // The job stopped reading: skip the rest.
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        return Ok(());
                    }
                }
                Ok(())
            }
        }
        let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, file));
        if let Err(e) = (&mut de).deserialize_seq(Each(tx.clone())) {
            let _ = tx.send(Err(format!("the stored upload cannot be read again: {e}")));
        }
    });
    rx.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_counted_without_being_kept_and_the_limit_stops_parsing() {
        assert_eq!(count_entries(&b"[{\"a\":1}, {\"b\":[2]} ]  \n"[..], 5), Ok(2));
        assert_eq!(count_entries(&b"[1,2,3,4,5]"[..], 5), Ok(5));
        let e = count_entries(&b"[1,2,3,4,5,6,"[..], 5).unwrap_err();
        assert!(e.contains("at most 5 users per job"), "{e}");
        assert_eq!(count_entries(&b"[]"[..], 5).unwrap_err(), "the list of users is empty");
        assert_eq!(count_entries(&b"{\"a\":1}"[..], 5).unwrap_err(), "must be a JSON array of users");
        assert_eq!(count_entries(&b""[..], 5).unwrap_err(), "a JSON request body is required");
        assert!(count_entries(&b"[1,2"[..], 5).unwrap_err().starts_with("malformed JSON at line 1"));
        assert!(count_entries(&b"[1] x"[..], 5).unwrap_err().contains("trailing characters"));
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
    }
}
