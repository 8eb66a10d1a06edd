//! The S3 transcript sink (issue 12 §4) against versitygw, a real S3-compatible server with
//! Object Lock (built by `make versitygw`, started here on a free port with temporary
//! directories, killed on drop): a session's transcript lands in the bucket under compliance
//! retention, written with the gateway's own keys; the locked version cannot be deleted and an
//! overwrite leaves it intact; with `required` and the sink down the shell is refused with
//! `E_INTERNAL`, the message naming the bucket, while a shell under a sink that is not required
//! works and its close message says the S3 copy is incomplete. Without versitygw the test is skipped, unless
//! `NODESHELL_REQUIRE_PEERS=1` (set by `make test`), which makes that a failure.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use nodeshell::localcluster::SYSTEM_NAMESPACE;
use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(30);
const ACCESS_KEY: &str = "nodeshellsink";
const SECRET_KEY: &str = "nodeshell-sink-test-secret";
const BUCKET: &str = "nodeshell-audit";
const REGION: &str = "us-east-1";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_peers() -> bool {
    std::env::var("NODESHELL_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// `NODESHELL_VERSITYGW`, else `e2e/.bin/versitygw`; `None` (skip) when it is missing,
/// a panic under `NODESHELL_REQUIRE_PEERS=1`.
fn versitygw() -> Option<PathBuf> {
    let path = std::env::var_os("NODESHELL_VERSITYGW")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("e2e/.bin/versitygw"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !require_peers(),
        "NODESHELL_REQUIRE_PEERS=1 but versitygw is missing at {}; run `make versitygw`",
        path.display()
    );
    eprintln!(
        "skipped: versitygw is missing at {}; run `make versitygw`",
        path.display()
    );
    None
}

/// A running versitygw (posix backend in temporary directories), killed on drop.
struct Versitygw {
    child: Child,
    url: String,
    _dirs: tempfile::TempDir,
}

impl Versitygw {
    async fn start(binary: &PathBuf) -> anyhow::Result<Self> {
        let dirs = tempfile::tempdir()?;
        let data = dirs.path().join("data");
        let versions = dirs.path().join("versions");
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&versions)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dirs.path().join("versitygw.log"))?;
        let child = Command::new(binary)
            .env("ROOT_ACCESS_KEY", ACCESS_KEY)
            .env("ROOT_SECRET_KEY", SECRET_KEY)
            .args(["--port", &format!("127.0.0.1:{port}"), "posix"])
            .arg("--versioning-dir")
            .arg(&versions)
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dirs: dirs,
        };
        wait_for("versitygw listening", T, || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok())
        })
        .await?;
        Ok(server)
    }

    /// A client as a user of the bucket (the server's root keys).
    fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// GetObjectRetention of one version, as XML. Signed by hand: versitygw answers with an
    /// `ObjectLockRetention` root element where S3 has `Retention`, which the SDK's parser
    /// refuses (boto3 and the AWS CLI accept it).
    async fn object_retention(&self, key: &str, version: &str) -> anyhow::Result<String> {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
        };
        let identity = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test").into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(std::time::SystemTime::now())
            .settings(settings)
            .build()?
            .into();
        let version: String = url::form_urlencoded::byte_serialize(version.as_bytes()).collect();
        let url = format!("{}/{BUCKET}/{key}?retention=&versionId={version}", self.url);
        let request =
            SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))?;
        let (instructions, _) = sign(request, &params)?.into_parts();
        let mut get = reqwest::Client::new().get(&url);
        for (name, value) in instructions.headers() {
            get = get.header(name, value);
        }
        let answer = get.send().await?;
        let status = answer.status();
        let body = answer.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "GetObjectRetention: HTTP {status}: {body}"
        );
        Ok(body)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Versitygw {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The JSON object stored under `key` in the bucket.
async fn json_object(s3: &aws_sdk_s3::Client, key: &str) -> anyhow::Result<serde_json::Value> {
    let body = s3.get_object().bucket(BUCKET).key(key).send().await?.body;
    Ok(serde_json::from_slice(&body.collect().await?.into_bytes())?)
}

#[tokio::test]
async fn a_transcript_lands_locked_in_s3_and_a_required_sink_that_is_down_refuses_the_shell()
-> anyhow::Result<()> {
    let Some(binary) = versitygw() else {
        return Ok(());
    };
    let mut s3 = Versitygw::start(&binary).await?;
    let user = s3.client();
    user.create_bucket()
        .bucket(BUCKET)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await?;

    let world = GatewayWorld::shared().await?;
    // The gateway's own identity for S3: static keys in its environment (the SDK's default
    // chain, as IRSA or Pod Identity would be in a cluster).
    let gw = world
        .start_gateway(GatewayOptions {
            patch: json!({"aws": {"s3Endpoint": s3.url}}),
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ],
            ..GatewayOptions::named("gw-s3")
        })
        .await?;
    let scope = world
        .scope(
            "s3",
            1,
            // nodeshell's own document, so the session also has a command ledger to copy.
            json!({"aws": {"documentName": "NodeShell-Shell"}, "transcript": {"s3": {
                "bucket": BUCKET,
                "prefix": "audit",
                "region": REGION,
                "retentionDays": 1,
                "required": true,
            }}}),
        )
        .await?;
    let api = gw.client(&world.token(&engineer(1)));

    // A shell's transcript lands in the bucket.
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    let out = term.run("echo landed-$((40+2))", T).await?;
    assert!(out.contains("landed-42"), "{out:?}");
    term.send_input(b"exit\r").await?;
    let closed = term.control("closed", T).await?;
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    let done = world
        .wait_session(&opened.session, "Closed with a transcript", T, |s| {
            s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["sha256"].is_null()
        })
        .await?;
    assert!(
        !done["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("S3"),
        "{done}"
    );
    let prefix = format!("audit/{SYSTEM_NAMESPACE}/{}/", opened.session);
    let listed = user
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(&prefix)
        .send()
        .await?;
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("{prefix}000000.cast.gz"),
            format!("{prefix}ledger.json"),
            format!("{prefix}session.json")
        ]
    );
    let chunk_key = format!("{prefix}000000.cast.gz");
    let got = user
        .get_object()
        .bucket(BUCKET)
        .key(&chunk_key)
        .send()
        .await?;
    let version = got.version_id().unwrap_or_default().to_string();
    assert!(!version.is_empty(), "a versioned object");
    let stored = got.body.collect().await?.into_bytes().to_vec();
    let cast = String::from_utf8(gunzip(&stored)?)?;
    let (_, output) = asciicast_output(&cast)?;
    assert!(output.contains("landed-42"), "{output:?}");
    let manifest: serde_json::Value = json_object(&user, &format!("{prefix}session.json")).await?;
    assert_eq!(manifest["session"], opened.session.as_str(), "{manifest}");
    // The ledger as the API serves it: the command the shell reported (the test terminal
    // appends its own end marker to the line it types).
    let ledger: serde_json::Value = json_object(&user, &format!("{prefix}ledger.json")).await?;
    assert!(
        ledger["commands"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["command"]
                .as_str()
                .is_some_and(|line| line.starts_with("echo landed-$((40+2))")))),
        "{ledger}"
    );
    assert_eq!(manifest["node"], scope.nodes[0].as_str(), "{manifest}");

    // Compliance retention, about a day from now.
    let retention = s3.object_retention(&chunk_key, &version).await?;
    assert!(retention.contains("<Mode>COMPLIANCE</Mode>"), "{retention}");
    let until = retention
        .split("<RetainUntilDate>")
        .nth(1)
        .and_then(|r| r.split("</RetainUntilDate>").next())
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.timestamp())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + 86_400 - 600..=now + 86_400 + 600).contains(&until),
        "retain until {until}, now {now}: {retention}"
    );

    // The locked version cannot be deleted, even with the bucket's root keys.
    let deleted = user
        .delete_object()
        .bucket(BUCKET)
        .key(&chunk_key)
        .version_id(&version)
        .send()
        .await;
    let error = deleted.expect_err("a locked version is not deleted");
    assert_eq!(error.code(), Some("AccessDenied"), "{error:?}");

    // An overwrite makes a new version; the locked one stays readable, unchanged.
    user.put_object()
        .bucket(BUCKET)
        .key(&chunk_key)
        .body(ByteStream::from_static(b"edited"))
        .send()
        .await?;
    let original = user
        .get_object()
        .bucket(BUCKET)
        .key(&chunk_key)
        .version_id(&version)
        .send()
        .await?
        .body
        .collect()
        .await?
        .into_bytes()
        .to_vec();
    assert_eq!(original, stored, "the locked version is intact");

    // The sink is down: a required sink refuses the shell before it opens, naming the bucket.
    s3.stop();
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    let error = term.control("error", Duration::from_secs(60)).await?;
    assert_eq!(error["code"], "E_INTERNAL", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("transcripts for this policy are required")
            && message.contains(&format!("the S3 sink (bucket {BUCKET})"))
            && message.contains("no session was opened"),
        "{error}"
    );
    assert!(term.find_control("hello").is_none(), "{:?}", term.controls);
    let cr = world.wait_closed(&opened.session, T).await?;
    assert_eq!(cr["status"]["reason"], "StartFailed", "{cr}");
    let (_, metrics) = gw.admin_get("/metrics").await?;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("nodeshell_gateway_live_s3_sink_failures_total ")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    // A sink that is not required: the shell opens and works, and its close message (so its
    // status and its audit row) says the S3 copy is incomplete and why.
    let optional = world
        .scope(
            "s3-optional",
            1,
            json!({"transcript": {"s3": {
                "bucket": BUCKET,
                "region": REGION,
                "retentionDays": 1,
            }}}),
        )
        .await?;
    let opened = api.open_ok(&optional.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    let out = term.run("echo still-$((40+2))", T).await?;
    assert!(out.contains("still-42"), "{out:?}");
    term.send_input(b"exit\r").await?;
    let closed = term.control("closed", Duration::from_secs(60)).await?;
    assert_eq!(closed["reason"], "UserExit", "{closed}");
    let done = world.wait_closed(&opened.session, T).await?;
    let message = done["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "; the S3 copy of the transcript is incomplete: the S3 sink (bucket {BUCKET}) did not take the transcript: "
        )),
        "{done}"
    );
    assert!(!done["status"]["transcript"]["sha256"].is_null(), "{done}");
    let session = opened.session.clone();
    let row = wait_for("the close audit row", T, || {
        let rows = gw.audit_rows();
        let session = session.clone();
        async move {
            Ok(rows
                .into_iter()
                .find(|r| r["event"] == "ssm_session_close" && r["session"] == session.as_str()))
        }
    })
    .await?;
    assert_eq!(row["message"].as_str(), Some(message), "{row}");
    world.cleanup(&optional).await?;
    world.cleanup(&scope).await?;
    Ok(())
}
