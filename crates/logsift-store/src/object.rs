//! Segment files on S3-compatible object storage (issue #18): `<prefix>/<index>/<id>.lsseg`,
//! uploaded whole when a segment is written and read through a local cache.
//!
//! A segment is built and bundled locally as always, into the cache, then uploaded; `write`
//! returns once the object store has it, so the catalog never lists a segment that is only on
//! local disk. Served segments are memory-mapped from the cache; one missing there (a new
//! machine, a cleared cache) is downloaded whole first. Integrity checks rehash the object in
//! the store, not the cached copy: what an auditor trusts is what the store holds.
//!
//! Requests run on the store's [`IoRuntime`]. Requests retry briefly and then fail: a seal that fails is retried by the store every few
//! seconds with its records kept in memory and the WAL, which is the back-off.
//!
//! A searcher (`crate::StoreConfig::read_only`) drops the cached copy of a segment the
//! catalog no longer lists. Not yet: a cache bounded in bytes (a process keeps a copy of
//! every segment it serves), and reading only the byte ranges a query needs.

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::files::{split_names, SegmentFiles};
use crate::runtime::IoRuntime;
use crate::segment::{write_bundle, BundleDirectory, SegmentError, Written, SEGMENT_EXT};

/// How long an uploaded segment that no catalog lists is left alone: another process sharing
/// the store may be about to catalogue it (a seal uploads first, then saves the catalog).
const PUBLISH_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Parts of a multipart upload; S3 wants at least 5 MiB per part but the last.
pub const PART_BYTES: usize = 8 << 20;

/// How to reach an S3-compatible object store.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `http(s)://host:port` of an S3-compatible service; empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Allow an `http://` endpoint (a store on the same host or network).
    pub allow_http: bool,
    /// Files larger than this are uploaded in parts of this size; 0 means [`PART_BYTES`].
    pub part_bytes: usize,
}

/// One object store shared by every index, with its local cache.
pub struct ObjectStorage {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    cache: PathBuf,
    part_bytes: usize,
    runtime: IoRuntime,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.url)
    }
}

impl ObjectStorage {
    /// The store of `url` (`s3://bucket` or `s3://bucket/prefix`), caching segments in `cache`.
    pub fn s3(url: &str, opts: &S3Options, cache: &Path) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("storage url {url:?}: only s3://bucket/prefix is supported"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("storage url {url:?} names no bucket"));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(opts.allow_http)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..Default::default()
            });
        if !opts.region.is_empty() {
            builder = builder.with_region(&opts.region);
        }
        if !opts.endpoint.is_empty() {
            // Path-style requests: S3-compatible servers rarely have a DNS name per bucket.
            builder = builder
                .with_endpoint(&opts.endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if !opts.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&opts.access_key_id)
                .with_secret_access_key(&opts.secret_access_key);
        }
        let store = builder
            .build()
            .map_err(|e| format!("storage url {url:?}: {e}"))?;
        fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
        let runtime =
            IoRuntime::new("logsift-object").map_err(|e| format!("object storage runtime: {e}"))?;
        Ok(ObjectStorage {
            url: url.trim_end_matches('/').to_string(),
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            cache: cache.to_path_buf(),
            part_bytes: if opts.part_bytes == 0 {
                PART_BYTES
            } else {
                opts.part_bytes
            },
            runtime,
        })
    }

    /// The segment files of index `name`.
    pub fn for_index(self: &Arc<Self>, name: &str) -> Result<ObjectSegments, SegmentError> {
        let cache = self.cache.join(name);
        fs::create_dir_all(&cache).map_err(|source| SegmentError::Io {
            path: cache.clone(),
            source,
        })?;
        // Downloads and bundles cut short by a crash: the cache is rebuilt from the store.
        if let Ok(files) = fs::read_dir(&cache) {
            for f in files.flatten() {
                if f.path().extension().is_some_and(|e| e == "tmp") {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        let dir = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        Ok(ObjectSegments {
            storage: self.clone(),
            dir,
            cache,
        })
    }

    /// Runs `f` on the storage runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, object_store::Error>> + Send + 'static,
    ) -> io::Result<T> {
        match self.runtime.run(f) {
            Some(Ok(v)) => Ok(v),
            Some(Err(object_store::Error::NotFound { path, source })) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path}: {source}"),
            )),
            Some(Err(e)) => Err(io::Error::other(e.to_string())),
            None => Err(io::Error::other("object storage is shut down")),
        }
    }
}

/// The segment files of one index in an [`ObjectStorage`].
#[derive(Debug)]
pub struct ObjectSegments {
    storage: Arc<ObjectStorage>,
    /// The index's "directory" in the bucket.
    dir: String,
    cache: PathBuf,
}

impl ObjectSegments {
    fn object(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{name}", self.dir))
    }

    fn cached(&self, id: &str) -> PathBuf {
        self.cache.join(format!("{id}.{SEGMENT_EXT}"))
    }

    fn err(&self, name: &str) -> impl FnOnce(io::Error) -> SegmentError + '_ {
        let path = PathBuf::from(format!("{}/{}/{name}", self.storage.url, self.dir));
        move |source| SegmentError::Io { path, source }
    }

    /// Uploads the local file `path` as `name`, in parts when it is large.
    fn upload(&self, path: &Path, name: &str) -> Result<(), SegmentError> {
        let store = self.storage.store.clone();
        let object = self.object(name);
        let path = path.to_path_buf();
        let part = self.storage.part_bytes;
        self.storage
            .run(async move {
                let local = |e: io::Error| object_store::Error::Generic {
                    store: "local segment file",
                    source: Box::new(e),
                };
                let mut file = File::open(&path).map_err(local)?;
                let len = file.metadata().map_err(local)?.len();
                if len <= part as u64 {
                    let mut bytes = Vec::with_capacity(len as usize);
                    file.read_to_end(&mut bytes).map_err(local)?;
                    store.put(&object, PutPayload::from(bytes)).await?;
                    return Ok(());
                }
                let upload = store.put_multipart(&object).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
                let mut buf = vec![0u8; part];
                loop {
                    let n = match file.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = writer.abort().await;
                            return Err(local(e));
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    // At most two parts in flight: memory stays at a few parts.
                    if let Err(e) = writer.wait_for_capacity(2).await {
                        let _ = writer.abort().await;
                        return Err(e);
                    }
                    writer.write(&buf[..n]);
                }
                writer.finish().await.map(|_| ())
            })
            .map_err(self.err(name))
    }

    /// Names of the objects of the index last written before `before` (all if `None`).
    fn names_before(
        &self,
        before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<String>, SegmentError> {
        let store = self.storage.store.clone();
        let prefix = ObjectPath::from(self.dir.as_str());
        let metas = self
            .storage
            .run(async move { store.list(Some(&prefix)).try_collect::<Vec<_>>().await })
            .map_err(self.err(""))?;
        Ok(metas
            .into_iter()
            .filter(|m| before.is_none_or(|b| m.last_modified < b))
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }
}

impl SegmentFiles for ObjectSegments {
    fn root(&self) -> String {
        format!("{}/{}", self.storage.url, self.dir)
    }

    fn write(&self, id: &str, src: &Path, names: &[String]) -> Result<Written, SegmentError> {
        let cached = self.cached(id);
        let written = write_bundle(src, names, &cached)?;
        let started = std::time::Instant::now();
        if let Err(e) = self.upload(&cached, &format!("{id}.{SEGMENT_EXT}")) {
            let _ = fs::remove_file(&cached);
            return Err(e);
        }
        // benches/e2e.rs reads publish latency from this line.
        tracing::info!(
            segment = %self.location(id),
            bytes = written.bytes,
            upload_ms = started.elapsed().as_secs_f64() * 1e3,
            "uploaded segment"
        );
        Ok(written)
    }

    fn open(&self, id: &str) -> Result<BundleDirectory, SegmentError> {
        let cached = self.cached(id);
        if !cached.exists() {
            let name = format!("{id}.{SEGMENT_EXT}");
            let store = self.storage.store.clone();
            let object = self.object(&name);
            let tmp = cached.with_extension("tmp");
            let out = File::create(&tmp).map_err(|source| SegmentError::Io {
                path: tmp.clone(),
                source,
            })?;
            let fetch = async move {
                let mut out = out;
                let mut stream = store.get(&object).await?.into_stream();
                while let Some(chunk) = stream.try_next().await? {
                    std::io::Write::write_all(&mut out, &chunk).map_err(|e| {
                        object_store::Error::Generic {
                            store: "cache",
                            source: Box::new(e),
                        }
                    })?;
                }
                Ok(())
            };
            if let Err(e) = self.storage.run(fetch) {
                let _ = fs::remove_file(&tmp);
                return Err(self.err(&name)(e));
            }
            fs::rename(&tmp, &cached).map_err(|source| SegmentError::Io {
                path: cached.clone(),
                source,
            })?;
            tracing::info!(segment = %self.location(id), "downloaded segment into the cache");
        }
        BundleDirectory::open(&cached)
    }

    fn size(&self, id: &str) -> Result<Option<u64>, SegmentError> {
        let store = self.storage.store.clone();
        let object = self.object(&format!("{id}.{SEGMENT_EXT}"));
        match self.storage.run(async move { store.head(&object).await }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(id)(e)),
        }
    }

    fn sha256(&self, id: &str) -> Result<String, SegmentError> {
        let store = self.storage.store.clone();
        let object = self.object(&format!("{id}.{SEGMENT_EXT}"));
        self.storage
            .run(async move {
                let mut sha = Sha256::new();
                let mut stream = store.get(&object).await?.into_stream();
                while let Some(chunk) = stream.try_next().await? {
                    sha.update(&chunk);
                }
                Ok(hex::encode(sha.finalize()))
            })
            .map_err(self.err(id))
    }

    /// One download for both checks, into a temporary file beside the cache (not the cache:
    /// what is checked is the object as stored, and an offline check serves nothing).
    fn check(&self, id: &str) -> Result<(String, Result<(), SegmentError>), SegmentError> {
        let name = format!("{id}.{SEGMENT_EXT}");
        let tmp = self
            .cache
            .join(format!("{id}.verify-{}.tmp", std::process::id()));
        fs::create_dir_all(&self.cache).map_err(|source| SegmentError::Io {
            path: self.cache.clone(),
            source,
        })?;
        let out = File::create(&tmp).map_err(|source| SegmentError::Io {
            path: tmp.clone(),
            source,
        })?;
        let store = self.storage.store.clone();
        let object = self.object(&name);
        let fetched = self.storage.run(async move {
            let mut out = out;
            let mut sha = Sha256::new();
            let mut stream = store.get(&object).await?.into_stream();
            while let Some(chunk) = stream.try_next().await? {
                sha.update(&chunk);
                std::io::Write::write_all(&mut out, &chunk).map_err(|e| {
                    object_store::Error::Generic {
                        store: "verify copy",
                        source: Box::new(e),
                    }
                })?;
            }
            Ok(hex::encode(sha.finalize()))
        });
        let result = match fetched {
            Ok(sha) => {
                let inner = BundleDirectory::open(&tmp)
                    .and_then(|d| d.verify_files())
                    // Named as the object, not the temporary copy.
                    .map_err(|e| match e {
                        SegmentError::Corrupt { why, .. } => SegmentError::Corrupt {
                            path: PathBuf::from(self.location(id)),
                            why,
                        },
                        other => other,
                    });
                Ok((sha, inner))
            }
            Err(e) => Err(self.err(&name)(e)),
        };
        let _ = fs::remove_file(&tmp);
        result
    }

    fn sha256_served(&self, id: &str) -> Result<String, SegmentError> {
        let cached = self.cached(id);
        if cached.exists() {
            crate::segment::sha256_file(&cached)
        } else {
            self.sha256(id)
        }
    }

    fn remove(&self, id: &str) -> Result<(), SegmentError> {
        let store = self.storage.store.clone();
        let object = self.object(&format!("{id}.{SEGMENT_EXT}"));
        match self.storage.run(async move { store.delete(&object).await }) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.err(id)(e)),
        }
        self.forget(id)
    }

    /// The cached copy goes; a search still reading it keeps its memory map.
    fn forget(&self, id: &str) -> Result<(), SegmentError> {
        match fs::remove_file(self.cached(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SegmentError::Io {
                path: self.cached(id),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn list(&self) -> Result<Vec<String>, SegmentError> {
        Ok(split_names(self.names_before(None)?).0)
    }

    fn settled(&self) -> Result<Vec<String>, SegmentError> {
        let cutoff = chrono::Utc::now() - PUBLISH_GRACE;
        Ok(split_names(self.names_before(Some(cutoff))?).0)
    }

    fn leftovers(&self) -> Result<Vec<String>, SegmentError> {
        Ok(split_names(self.names_before(None)?).1)
    }

    fn remove_leftover(&self, name: &str) -> Result<(), SegmentError> {
        let store = self.storage.store.clone();
        let object = self.object(name);
        match self.storage.run(async move { store.delete(&object).await }) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err(name)(e)),
            _ => Ok(()),
        }
    }
}
