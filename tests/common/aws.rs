//! Real AWS APIs for tests: a moto server per test on a free loopback port (installed in `.venv` by
//! `.ci/run`), clients pointed at it, and a TCP proxy that can cut or slow the bot's connection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::free_port;

pub fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run .ci/run (or: python3 -m venv .venv && .venv/bin/pip install 'moto[server]' boto3 amazon-s3-encryption-client-python)",
        path.display()
    );
    path
}

/// A moto server, killed on drop.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub async fn start() -> Moto {
        Self::start_with(Command::new(venv_bin("moto_server"))).await
    }

    /// moto with AWS's rule that a KMS key pending deletion (or disabled) refuses every
    /// cryptographic operation, which moto alone does not enforce (`tests/python/strict_moto.py`).
    pub async fn start_strict() -> Moto {
        let mut python = Command::new(venv_bin("python"));
        python.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/strict_moto.py"));
        Self::start_with(python).await
    }

    /// Strict moto where a key scheduled for deletion is deleted `secs` seconds later, as AWS
    /// deletes it at the end of its waiting period.
    pub async fn start_strict_deleting_after(secs: u64) -> Moto {
        let mut python = Command::new(venv_bin("python"));
        python
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/strict_moto.py"))
            .env("STRICT_MOTO_DELETE_AFTER_SECS", secs.to_string());
        Self::start_with(python).await
    }

    async fn start_with(mut command: Command) -> Moto {
        let port = free_port();
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "moto server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config().await)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.s3().await.create_bucket().bucket(bucket).send().await.unwrap();
    }

    /// A bucket with Object Lock enabled (versioned, as S3 requires).
    pub async fn create_locked_bucket(&self, bucket: &str) {
        self.s3()
            .await
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .unwrap();
    }

    /// A versioned bucket without Object Lock (whose versions a bucket writer may delete for good).
    pub async fn create_versioned_bucket(&self, bucket: &str) {
        self.create_bucket(bucket).await;
        let on = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
            .build();
        self.s3()
            .await
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(on)
            .send()
            .await
            .unwrap();
    }

    /// What a bucket writer does with a plain `DeleteObject` (no version id): on a versioned bucket,
    /// even one under COMPLIANCE retention, a delete marker over the object.
    pub async fn hide(&self, bucket: &str, key: &str) {
        self.s3()
            .await
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }

    /// The versions (newest first) and delete markers of `key` exactly.
    pub async fn versions_of(
        &self,
        bucket: &str,
        key: &str,
    ) -> (
        Vec<aws_sdk_s3::types::ObjectVersion>,
        Vec<aws_sdk_s3::types::DeleteMarkerEntry>,
    ) {
        let listed = self
            .s3()
            .await
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .send()
            .await
            .unwrap();
        let versions = listed
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .cloned()
            .collect();
        let markers = listed
            .delete_markers()
            .iter()
            .filter(|m| m.key() == Some(key))
            .cloned()
            .collect();
        (versions, markers)
    }

    /// Every version and delete marker of `key` deleted for good (governance bypassed): what a
    /// bucket writer can do where no retention stands in the way.
    pub async fn erase(&self, bucket: &str, key: &str) {
        let s3 = self.s3().await;
        let (versions, markers) = self.versions_of(bucket, key).await;
        let ids = versions
            .iter()
            .map(|v| v.version_id().map(str::to_owned))
            .chain(markers.iter().map(|m| m.version_id().map(str::to_owned)))
            // An unversioned bucket's object: deleted as it is.
            .map(|id| id.filter(|id| id != "null"));
        for id in ids {
            s3.delete_object()
                .bucket(bucket)
                .key(key)
                .set_version_id(id)
                .bypass_governance_retention(true)
                .send()
                .await
                .unwrap();
        }
    }

    pub async fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    pub async fn create_secret(&self, name: &str, text: &str) {
        let client = self.secrets().await;
        client
            .create_secret()
            .name(name)
            .secret_string(text)
            .send()
            .await
            .unwrap();
    }

    /// The secret's current JSON.
    pub async fn secret_json(&self, name: &str) -> serde_json::Value {
        let out = self
            .secrets()
            .await
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .unwrap();
        serde_json::from_str(out.secret_string().unwrap()).unwrap()
    }

    /// An SNS topic with an SQS queue subscribed to it (raw delivery: each message is the event
    /// itself). Returns the topic ARN and the queue URL.
    pub async fn topic_with_queue(&self, name: &str) -> (String, String) {
        let config = self.sdk_config().await;
        let (sns, sqs) = (aws_sdk_sns::Client::new(&config), aws_sdk_sqs::Client::new(&config));
        let topic = sns.create_topic().name(name).send().await.unwrap().topic_arn.unwrap();
        let queue_url = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let queue_arn = attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .unwrap();
        (topic, queue_url)
    }

    /// Every message now in the queue (removed from it), parsed as JSON.
    pub async fn drain_queue(&self, queue_url: &str) -> Vec<serde_json::Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        let mut out = Vec::new();
        loop {
            let got = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            if got.messages().is_empty() {
                return out;
            }
            for m in got.messages() {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// The sum of a `WickrIO` metric's datapoints for bot `bot` over the last hour.
    pub async fn metric_sum(&self, name: &str, bot: &str) -> Option<f64> {
        let cw = aws_sdk_cloudwatch::Client::new(&self.sdk_config().await);
        let now = std::time::SystemTime::now();
        let out = cw
            .get_metric_statistics()
            .namespace("WickrIO")
            .metric_name(name)
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("BotName")
                    .value(bot)
                    .build(),
            )
            .start_time((now - Duration::from_secs(3600)).into())
            .end_time((now + Duration::from_secs(60)).into())
            .period(3600)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
            .send()
            .await
            .unwrap();
        let points = out.datapoints();
        (!points.is_empty()).then(|| points.iter().filter_map(|p| p.sum()).sum())
    }

    /// A new symmetric KMS key; returns its ARN.
    pub async fn create_key(&self) -> String {
        let key = self.kms().await.create_key().send().await.unwrap();
        key.key_metadata.unwrap().arn.unwrap()
    }

    /// The environment that points a bot (or the decrypt tool) at this server through `endpoint`.
    pub fn env_via(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn env(&self) -> Vec<(String, String)> {
        Self::env_via(&self.endpoint())
    }

    /// Keys in the bucket, sorted.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self.s3().await.list_objects_v2().bucket(bucket).send().await.unwrap();
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    /// An object's raw body and user metadata, as stored.
    pub async fn object(&self, bucket: &str, key: &str) -> (Vec<u8>, HashMap<String, String>) {
        let out = self
            .s3()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let metadata = out.metadata().cloned().unwrap_or_default();
        (out.body.collect().await.unwrap().to_vec(), metadata)
    }

    pub async fn put_raw(&self, bucket: &str, key: &str, body: Vec<u8>, metadata: HashMap<String, String>) {
        self.s3()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .set_metadata(Some(metadata))
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }

    pub async fn unfinished_uploads(&self, bucket: &str) -> usize {
        let out = self
            .s3()
            .await
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.uploads().len()
    }

    /// Uploads `files` (object key, local path) as the original bot does: S3EC V2 through the
    /// official client, no manifest (see tests/python/write_original.py).
    pub fn write_original(&self, bucket: &str, key_arn: &str, files: &[(&str, &std::path::Path)]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/write_original.py");
        let out = Command::new(venv_bin("python"))
            .arg(script)
            .args([&self.endpoint(), bucket, key_arn])
            .args(files.iter().map(|(key, path)| format!("{key}={}", path.display())))
            .envs(self.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Decrypts with a third-party reader (`official` or `sample`; see tests/python/read_encrypted.py).
    pub fn read_encrypted(&self, bucket: &str, key: &str, key_arn: &str, mode: &str) -> Result<Vec<u8>, String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_encrypted.py");
        let out = Command::new(venv_bin("python"))
            .arg(script)
            .args([&self.endpoint(), bucket, key, key_arn, mode])
            .envs(self.env())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to a server that a test can take down (connections refused and cut) or slow down.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// Client-to-server bytes per second; 0 is unlimited.
    rate: Arc<AtomicU64>,
    /// Client-to-server bytes relayed so far.
    pub sent: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let rate = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let (u, r, s) = (up.clone(), rate.clone(), sent.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: the bot sees the connection closed
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, u.clone(), r.clone(), s.clone()));
            }
        });
        Proxy { port, up, rate, sent }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::SeqCst);
    }
}

async fn relay(client: TcpStream, server: TcpStream, up: Arc<AtomicBool>, rate: Arc<AtomicU64>, sent: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let upstream = {
        let up = up.clone();
        async move {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !up.load(Ordering::SeqCst) || sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                sent.fetch_add(n as u64, Ordering::SeqCst);
                let r = rate.load(Ordering::SeqCst);
                if r > 0 {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / r as f64)).await;
                }
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !up.load(Ordering::SeqCst) || cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending (or the proxy going down) closes both.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// One request as it reached the proxy.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names (lower case) and their values' raw bytes, as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body of a form-encoded request (the STS and SNS query APIs), as sent.
    pub form: Option<String>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// An HTTP proxy in front of a server (moto) that records every request's head, byte for byte, and
/// can answer requests whose path contains a marker with S3's `403 AccessDenied`, as a bucket policy
/// that denies some keys would. Everything else is forwarded unchanged.
pub struct RecordingProxy {
    pub port: u16,
    requests: Arc<std::sync::Mutex<Vec<RecordedRequest>>>,
    refuse: Arc<std::sync::Mutex<Option<String>>>,
    lose: Arc<std::sync::Mutex<Option<(String, usize)>>>,
}

impl RecordingProxy {
    pub async fn start(target_port: u16) -> RecordingProxy {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::response::Response;

        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let refuse: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let lose: Arc<std::sync::Mutex<Option<(String, usize)>>> = Arc::default();
        let (recorded, refused, lost) = (requests.clone(), refuse.clone(), lose.clone());
        let client = reqwest::Client::new();
        let forward = move |req: Request| {
            let (recorded, refused, lost, client) = (recorded.clone(), refused.clone(), lost.clone(), client.clone());
            async move {
                let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                let method = req.method().clone();
                let headers: Vec<(String, Vec<u8>)> = req
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect();
                let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .unwrap_or_default();
                // Form bodies (the STS and SNS query APIs) are small and say what was asked.
                let form = headers
                    .iter()
                    .any(|(n, v)| n == "content-type" && v.starts_with(b"application/x-www-form-urlencoded"))
                    .then(|| String::from_utf8_lossy(&body).into_owned());
                recorded.lock().unwrap().push(RecordedRequest {
                    method: method.to_string(),
                    path: path.clone(),
                    headers: headers.clone(),
                    form,
                });
                let marker = refused.lock().unwrap().clone();
                if marker.is_some_and(|m| path.contains(&m)) {
                    return Response::builder()
                        .status(403)
                        .header("content-type", "application/xml")
                        .body(Body::from(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied (by the test's proxy)</Message></Error>",
                        ))
                        .unwrap();
                }
                let mut out = client.request(method.clone(), format!("http://127.0.0.1:{target_port}{path}"));
                for (name, value) in &headers {
                    if !matches!(
                        name.as_str(),
                        "host" | "content-length" | "transfer-encoding" | "connection"
                    ) {
                        out = out.header(name.as_str(), value.as_slice());
                    }
                }
                let answer = match out.body(body).send().await {
                    Ok(a) => a,
                    Err(e) => return Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
                };
                // The request reached the server; its answer is "lost" on the way back, as the SDK
                // sees a dropped answer: a 500 it retries.
                let lose_this = {
                    let mut lost = lost.lock().unwrap();
                    match lost.as_mut() {
                        Some((marker, left)) if *left > 0 && method == "PUT" && path.contains(marker.as_str()) => {
                            *left -= 1;
                            true
                        }
                        _ => false,
                    }
                };
                if lose_this {
                    return Response::builder()
                        .status(500)
                        .header("content-type", "application/xml")
                        .body(Body::from(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>answer lost (by the test's proxy)</Message></Error>",
                        ))
                        .unwrap();
                }
                let mut response = Response::builder().status(answer.status().as_u16());
                for (name, value) in answer.headers() {
                    if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
                        response = response.header(name, value);
                    }
                }
                response
                    .body(Body::from(answer.bytes().await.unwrap_or_default()))
                    .unwrap()
            }
        };
        let app = axum::Router::new().fallback(forward);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RecordingProxy {
            port,
            requests,
            refuse,
            lose,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on, requests whose path contains `marker` get 403 AccessDenied (`None`: none do).
    pub fn refuse_paths_containing(&self, marker: Option<&str>) {
        *self.refuse.lock().unwrap() = marker.map(str::to_owned);
    }

    /// The next `count` PUT requests whose path contains `marker` reach the server, but their answers
    /// are replaced by a 500, as if lost on the way back.
    pub fn lose_answers_to(&self, marker: &str, count: usize) {
        *self.lose.lock().unwrap() = Some((marker.to_owned(), count));
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
}
