//! The first attach: from an Admitted session to a running shell. Order matters: a
//! recording that can refuse the session (a required transcript, a required S3 sink) is
//! stored before any AWS call (one that cannot be stored must not leave an SSM session
//! behind); an optional one is stored while AWS starts the session, and either way before
//! the session is Active and before any output reaches the browser. The session becomes
//! Active only if it is still Admitted (a Closed or Rejected session is never revived).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::bridge::{self, Attachment, Outbound, QueuedEvent};
use super::credentials;
use super::driver::{self, Started};
use super::failed_start::{not_admitted, record_failure};
use super::frames::ServerFrame;
use super::reasons::{
    StartFailure, assume_role_failure, channel_failure, start_session_failure,
    transcript_start_failure,
};
use super::records::SessionInfo;
use super::status::{ActiveFacts, ApplyMode, RetryStep, StatusRetry, WriteFailure, active_status};
use super::{Control, Inner, LiveHandle, Slot};
use crate::api::{NodeShellSession, NodeShellSessionStatus, PolicyTranscript, SessionPhase};
use crate::aws::{AwsEndpoints, SessionStream, SsmSessions, WebIdentityRequest};
use crate::gateway::audit::{AuditActor, AuditRow, AuditSubject};
use crate::gateway::config::live::{
    SSM_OUTPUT_QUEUE_CHUNKS, SSM_RECEIVE_EARLY_BYTES, SSM_RECEIVE_EARLY_MESSAGES,
    SSM_RECEIVE_WINDOW_BYTES, SSM_RECEIVE_WINDOW_MESSAGES,
};
use crate::gateway::error::ErrorCode;
use crate::gateway::handover::{AttachGrant, MintedCredentials};
use crate::gateway::ledger::{LEDGER_DOCUMENT, Ledger, NONCE_PARAMETER, new_nonce};
use crate::gateway::step_times::StepTimes;
use crate::gateway::transcript::s3::SinkTarget;
use crate::gateway::transcript::{
    AsciicastHeader, StorageFailure, Transcript, encode, transcript_ref,
};
use crate::ssm::{DataChannel, DataChannelOptions, ReceiveConfig};

/// Longest `Reason` StartSession accepts.
const MAX_SSM_REASON: usize = 256;
/// Attempts at the Active write when the session changes underneath (heartbeat-free races).
pub(super) const ACTIVE_WRITE_ATTEMPTS: usize = 3;

/// Why the start stopped: a refusal before anything was started, or a failure to record.
enum Refusal {
    /// Answer the browser only (the session is not ours to close).
    Frame(ServerFrame),
    /// Close the session with the failure's reason, then answer the browser.
    Failed(StartFailure),
}

/// Runs a first attach to the end of the browser's connection.
pub(super) async fn first_attach(
    inner: Arc<Inner>,
    grant: Box<AttachGrant>,
    socket: bridge::BrowserSocket,
) {
    let name = grant.session.name_any();
    if inner
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        bridge::refuse(
            socket,
            ServerFrame::error(
                ErrorCode::Internal,
                "this gateway is shutting down; try again",
                true,
            ),
        )
        .await;
        return;
    }
    let claimed = {
        let mut slots = inner.slots();
        let free = !slots.contains_key(&name);
        if free {
            slots.insert(name.clone(), Slot::Starting);
        }
        free
    };
    if !claimed {
        {
            bridge::refuse(
                socket,
                ServerFrame::error(
                    ErrorCode::BadRequest,
                    format!(
                        "session {name} is already attached on this gateway; reattach with its resume token"
                    ),
                    false,
                ),
            )
            .await;
            return;
        }
    }
    // The start runs in its own task: once AWS calls begin, it must finish (and either run
    // the session or close it) even if this attach is dropped.
    let (answer_tx, answer_rx) = oneshot::channel();
    spawn_start(inner.clone(), grant, answer_tx);
    match answer_rx.await {
        Ok(Ok((out_rx, events_tx))) => bridge::run(socket, out_rx, events_tx).await,
        Ok(Err(frame)) => bridge::refuse(socket, frame).await,
        Err(_) => {
            bridge::refuse(
                socket,
                ServerFrame::error(ErrorCode::Internal, "the session start stopped", true),
            )
            .await;
        }
    }
}

/// Spawns the start in its own task, which hands a started session to a task of the
/// session's own ([`driver::run`]) and ends. A plain function on purpose:
/// made inside `first_attach` (an async fn), that future would also be laid out in
/// `first_attach`'s own, although it is moved out at once, and the browser's task would hold
/// room for a second copy as long as the browser stays attached.
fn spawn_start(inner: Arc<Inner>, grant: Box<AttachGrant>, answer: oneshot::Sender<StartAnswer>) {
    tokio::spawn(start_and_run(inner, grant, answer));
}

/// What the attach gets back: the bridge's ends of a running session, or the refusal.
type StartAnswer = Result<(mpsc::Receiver<Outbound>, mpsc::Sender<QueuedEvent>), ServerFrame>;

async fn start_and_run(
    inner: Arc<Inner>,
    mut grant: Box<AttachGrant>,
    answer: oneshot::Sender<StartAnswer>,
) {
    let name = grant.session.name_any();
    // The open's credentials go to the start only (dropped with it, used or not).
    let minted = grant.minted.take();
    // Boxed, as when this task also ran the session: the start's AWS and Kubernetes calls
    // make a large future, and this task's own stays small
    // (`the_session_task_does_not_reserve_room_for_its_start`); the session's task
    // (`driver::run`) is spawned below and carries none of it.
    match Box::pin(start(&inner, &grant, minted)).await {
        Ok(started) => {
            let (attachment, out_rx, events_tx) = Attachment::new(None);
            let (control_tx, control_rx) = mpsc::channel(4);
            let (attach_tx, attach_rx) = mpsc::channel(2);
            let handle = LiveHandle {
                control: control_tx.clone(),
                attach: attach_tx,
                resume_token: started.info.resume_token.clone(),
            };
            inner.slots().insert(name.clone(), Slot::Live(handle));
            if inner
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                let _ =
                    control_tx.try_send(Control::End(Box::new(super::EndReason::GatewayShutdown)));
            }
            // A dropped attach leaves a session without a browser: it waits for a reattach
            // within the grace, like any other.
            let _ = answer.send(Ok((out_rx, events_tx)));
            // The grant (the session and its policy as read at attach, the person's id_token)
            // served the start only: the running session keeps what it needs in `started`.
            drop(grant);
            // The session runs in a task of its own, and this one ends: this task's future
            // is laid out for the start's locals and answers too (`started` among them, as
            // it was borrowed), and as the session's task it kept that room for the
            // session's whole life.
            tokio::spawn(driver::run(
                inner,
                Box::new(started),
                attachment,
                attach_rx,
                control_rx,
            ));
        }
        Err(refusal) => {
            inner.release(&name);
            let frame = match refusal {
                Refusal::Frame(frame) => frame,
                Refusal::Failed(f) => ServerFrame::error(f.code, f.message, f.retryable),
            };
            if let ServerFrame::Error { code, .. } = &frame {
                inner.config.metrics.start(code);
            }
            let _ = answer.send(Err(frame));
        }
    }
}

/// The `Reason` of StartSession, which CloudTrail records: cluster, node, actor, session and
/// the reason the person typed, one line (StartSession's `Reason` is 1 to 256 characters
/// matching `^.{1,256}$`, so no line breaks: control characters become spaces), cut at 256.
pub(super) fn ssm_reason(
    cluster: &str,
    node: &str,
    actor: &str,
    session: &str,
    typed: Option<&str>,
) -> String {
    let mut text =
        format!("nodeshell: cluster {cluster}, node {node}, by {actor}, session {session}");
    if let Some(typed) = typed.map(str::trim).filter(|t| !t.is_empty()) {
        text.push_str(": ");
        text.push_str(typed);
    }
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_SSM_REASON)
        .collect()
}

/// An open row with the facts known at start.
pub(super) fn open_row(
    inner: &Inner,
    grant: &AttachGrant,
    now: Timestamp,
    session_id: Option<&str>,
    assumed_role_arn: Option<&str>,
) -> AuditRow {
    let actor = AuditActor::of(&grant.session);
    AuditRow::opened(
        AuditSubject {
            actor: &actor,
            cluster: &inner.config.cluster_name,
            gateway: &inner.config.pod_name,
            client: &grant.client,
            session: &grant.session,
            ssm_session_id: session_id,
            assumed_role_arn,
        },
        now,
    )
}

async fn start(
    inner: &Arc<Inner>,
    grant: &AttachGrant,
    minted: Option<MintedCredentials>,
) -> Result<Started, Refusal> {
    // The object the attach read a moment ago, in the same request (no second read): the
    // Active write is conditional on its resourceVersion, so a change since is read again
    // there. A session no longer Admitted (expired, ended) is refused and what was started
    // in AWS ended; a termination asked for meanwhile reaches the running session through
    // its subscription.
    let fresh = &grant.session;
    if fresh.phase() != SessionPhase::Admitted {
        return Err(Refusal::Frame(not_admitted(fresh)));
    }
    let mut progress = Progress::default();
    let result = start_admitted(inner, grant, fresh, minted, &mut progress).await;
    match result {
        Ok(started) => Ok(started),
        Err(Refusal::Failed(failure)) => {
            record_failure(inner, grant, fresh, &failure, &progress).await;
            Err(Refusal::Failed(failure))
        }
        Err(other) => Err(other),
    }
}

/// What the start reached before a failure, for the audit row.
#[derive(Default)]
pub(super) struct Progress {
    /// The assumed role, once STS answered.
    pub assumed_role_arn: Option<String>,
    /// The SSM session, once StartSession answered.
    pub session_id: Option<String>,
}

/// The start of an Admitted session, step by step; `progress` keeps what was reached for
/// the audit row of a failure.
async fn start_admitted(
    inner: &Arc<Inner>,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
    minted: Option<MintedCredentials>,
    progress: &mut Progress,
) -> Result<Started, Refusal> {
    let origin = Instant::now();
    let origin_wall = Timestamp::now();
    let mut steps = StepTimes::start();
    // The ledger document's marks carry a nonce only this gateway knows (issue 12 §1).
    let nonce = (fresh.spec.document_name == LEDGER_DOCUMENT).then(new_nonce);
    let (recording, aws) = if recording_can_refuse(&grant.policy.spec.transcript) {
        // Fail closed: nothing starts in AWS before the recording is stored.
        let (transcript, stored) = first_transcript(inner, grant, fresh).await?;
        steps.lap("transcript");
        let sink = first_sink_object(inner, grant, fresh, transcript.is_some()).await?;
        steps.lap("sink");
        let aws = start_in_aws(
            inner,
            grant,
            fresh,
            minted,
            nonce.as_deref(),
            progress,
            &mut steps,
        )
        .await?;
        ((transcript, stored, sink), aws)
    } else {
        // Nothing about the recording can refuse the session: it is stored while AWS starts
        // it, and in any case before the session is Active and any output is forwarded.
        let (recorded, aws) = tokio::join!(
            first_recording(inner, grant, fresh),
            start_in_aws(
                inner,
                grant,
                fresh,
                minted,
                nonce.as_deref(),
                progress,
                &mut steps
            ),
        );
        let (transcript, sink, took) = recorded;
        steps.alongside("transcript", took.0);
        steps.alongside("sink", took.1);
        let aws = aws?;
        match (transcript, sink) {
            (Ok((transcript, stored)), Ok(sink)) => ((transcript, stored, sink), aws),
            // Only a required recording refuses, and those are stored first (above).
            (Err(refusal), _) | (_, Err(refusal)) => {
                aws.1.close();
                let _ = aws.0.terminate_session(&aws.2.session_id).await;
                return Err(refusal);
            }
        }
    };
    let (transcript, transcript_stored, sink) = recording;
    let (ssm, channel, stream) = aws;
    let ledger = nonce
        .filter(|_| transcript.is_some())
        .map(|n| Ledger::new(&n, origin_wall));
    let now = Timestamp::now();
    let row = open_row(
        inner,
        grant,
        now,
        Some(&stream.session_id),
        progress.assumed_role_arn.as_deref(),
    );
    let snapshot = first_snapshot(
        inner,
        fresh,
        &stream.session_id,
        now,
        &row,
        transcript.as_ref().filter(|_| transcript_stored),
    );
    // Before the Active write: its event, and every change after it, reach the session.
    let watch = inner.watch.subscribe_before_write(&fresh.name_any());
    let written = match mark_active(inner, fresh, &snapshot).await {
        Ok(written) => written,
        Err(refusal) => {
            channel.close();
            let _ = ssm.terminate_session(&stream.session_id).await;
            return Err(refusal);
        }
    };
    steps.lap("active");
    info!(session = %fresh.name_any(), steps_us = steps.render(), "start steps");
    announce(inner, &written, &row, &stream.session_id);
    Ok(Started {
        info: Arc::new(SessionInfo {
            name: fresh.name_any(),
            session: kept(written),
            actor: AuditActor::of(&grant.session),
            cluster: inner.config.cluster_name.clone(),
            gateway: inner.config.pod_name.clone(),
            client: grant.client.clone(),
            ssm_session_id: stream.session_id,
            assumed_role_arn: progress.assumed_role_arn.clone(),
            started_at: now,
            resume_token: hex::encode(rand::random::<[u8; 32]>()),
            limits: grant.policy.spec.limits.clone(),
            transcript_required: grant.policy.spec.transcript.required,
            sink,
        }),
        size: (grant.cols, grant.rows),
        channel,
        ssm,
        transcript,
        transcript_stored,
        ledger,
        origin,
        started: Instant::now(),
        snapshot,
        watch,
    })
}

/// Pure: whether the policy's recording may refuse the session (a required transcript or a
/// required S3 sink): its first writes then come before anything is started in AWS.
fn recording_can_refuse(transcript: &PolicyTranscript) -> bool {
    transcript.required
        || (transcript.enabled && transcript.s3.as_ref().is_some_and(|s3| s3.required))
}

/// The first transcript write, then the sink's first object, each with the time it took.
type Recorded = (
    Result<(Option<Transcript>, bool), Refusal>,
    Result<Option<Arc<SinkTarget>>, Refusal>,
    (std::time::Duration, std::time::Duration),
);

/// Steps 1 and 1b run alongside the AWS steps (a recording that cannot refuse the session).
async fn first_recording(
    inner: &Arc<Inner>,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
) -> Recorded {
    let began = Instant::now();
    let transcript = first_transcript(inner, grant, fresh).await;
    let transcript_took = began.elapsed();
    let recording = matches!(&transcript, Ok((Some(_), _)));
    let sink = first_sink_object(inner, grant, fresh, recording).await;
    (
        transcript,
        sink,
        (transcript_took, began.elapsed() - transcript_took),
    )
}

/// Steps 2 to 4: the person's credentials, the SSM session and its data channel.
async fn start_in_aws(
    inner: &Inner,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
    minted: Option<MintedCredentials>,
    nonce: Option<&str>,
    progress: &mut Progress,
    steps: &mut StepTimes,
) -> Result<(SsmSessions, DataChannel, SessionStream), Refusal> {
    let ssm = assume_role(inner, grant, fresh, minted, progress).await?;
    steps.lap("sts");
    let stream = start_ssm_session(inner, fresh, &ssm, nonce, progress).await?;
    steps.lap("start_session");
    let channel = open_channel(inner, grant, fresh, &ssm, &stream).await?;
    steps.lap("channel");
    Ok((ssm, channel, stream))
}

/// The session object a running session keeps for its whole life (names, spec, uid for the
/// transcript Secrets' owner): without its managedFields, which nothing in the gateway reads
/// and which are most of the object's memory.
fn kept(mut written: NodeShellSession) -> NodeShellSession {
    written.metadata.managed_fields = None;
    written
}

/// Step 1: The transcript's first write, before anything is started in AWS: a required
/// transcript that cannot be stored refuses the session; otherwise the next flush retries.
/// Returns the transcript (when the policy records one) and whether that write succeeded.
async fn first_transcript(
    inner: &Inner,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
) -> Result<(Option<Transcript>, bool), Refusal> {
    let policy = &grant.policy.spec;
    if !policy.transcript.enabled {
        return Ok((None, false));
    }
    let name = fresh.name_any();
    let header = AsciicastHeader {
        width: grant.cols,
        height: grant.rows,
        timestamp: Timestamp::now().as_second(),
        title: format!("{} {}", fresh.spec.node_name, name),
        term: "xterm-256color".into(),
    };
    let mut t = Transcript::start(
        &header,
        u64::try_from(policy.transcript.max_bytes).unwrap_or(0),
        policy.transcript.capture_input,
    );
    // A fresh recording always has its first chunk (the header line) to write.
    let Some(encoded) = (match t.begin_flush(true) {
        Some(job) => encode(job).await,
        None => None,
    }) else {
        // The encoding thread was lost (the runtime is going down): record nothing.
        inner.config.metrics.transcript_failures.inc();
        warn!(session = %name, "the transcript's first chunk could not be encoded");
        if policy.transcript.required {
            return Err(Refusal::Failed(transcript_start_failure(
                &StorageFailure::Unavailable,
            )));
        }
        return Ok((None, false));
    };
    let result = inner.store.store(fresh, &encoded.chunks).await;
    t.end_flush(encoded, result.is_ok());
    match result {
        Ok(()) => Ok((Some(t), true)),
        Err(e) => {
            inner.config.metrics.transcript_failures.inc();
            let failure = StorageFailure::classify(&e, inner.store.namespace());
            // The apiserver's text (a Status dump naming our service account) is for
            // operators only; the person and the records get the classified cause.
            if policy.transcript.required {
                warn!(session = %name, error = %e, retryable = failure.retryable(), "first transcript write failed; the policy requires a transcript, so the session is refused");
                return Err(Refusal::Failed(transcript_start_failure(&failure)));
            }
            warn!(session = %name, error = %e, retryable = failure.retryable(), "first transcript write failed; retrying at the next flush");
            Ok((Some(t), false))
        }
    }
}

/// Step 1b: The S3 sink's `session.json`, before anything is started in AWS, written with the
/// gateway's own identity: a required sink that cannot take it refuses the session; any other
/// is written in the background.
async fn first_sink_object(
    inner: &Arc<Inner>,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
    recording: bool,
) -> Result<Option<Arc<SinkTarget>>, Refusal> {
    let Some(spec) = grant
        .policy
        .spec
        .transcript
        .s3
        .as_ref()
        .filter(|_| recording)
    else {
        return Ok(None);
    };
    let name = fresh.name_any();
    let target = Arc::new(SinkTarget::new(
        spec,
        &inner.config.namespace,
        &name,
        &fresh.spec.region,
    ));
    let manifest = serde_json::json!({
        "session": name,
        "namespace": inner.config.namespace,
        "cluster": inner.config.cluster_name,
        "user": {"sub": fresh.spec.user.sub, "name": fresh.spec.user.name},
        "node": fresh.spec.node_name,
        "instanceId": fresh.spec.instance_id,
        "policy": grant.policy.name_any(),
        "startedAt": Timestamp::now().to_string(),
        "transcriptFormat": crate::gateway::transcript::TRANSCRIPT_FORMAT,
    });
    let sink = inner.sink().clone();
    if !spec.required {
        // Not required: the shell does not wait for S3; a failure is noted on the target.
        let target = target.clone();
        tokio::spawn(async move { sink.put_manifest(&target, &manifest).await });
    } else if let Err(e) = sink.put_manifest(&target, &manifest).await {
        warn!(session = %name, error = %e, "the S3 sink refused the session's first object; the policy requires it, so the session is refused");
        return Err(Refusal::Failed(transcript_start_failure(
            &StorageFailure::from_sink(&e),
        )));
    }
    Ok(Some(target))
}

/// The session's AWS endpoints: the configured ones in the session's region.
fn endpoints(inner: &Inner, fresh: &NodeShellSession) -> AwsEndpoints {
    AwsEndpoints {
        region: fresh.spec.region.clone(),
        ..inner.config.endpoints.clone()
    }
}

/// Step 2: The person's own credentials, kept only inside the SSM client: those the open
/// minted on this replica when they [serve](MintedCredentials::serves) this very request
/// (same role, role session name and duration, not near expiry), else a new
/// AssumeRoleWithWebIdentity with the attach's id_token.
async fn assume_role(
    inner: &Inner,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
    minted: Option<MintedCredentials>,
    progress: &mut Progress,
) -> Result<SsmSessions, Refusal> {
    let spec = &fresh.spec;
    let endpoints = endpoints(inner, fresh);
    let request = WebIdentityRequest {
        role_arn: spec.role_arn.clone(),
        role_session_name: spec.role_session_name.clone(),
        web_identity_token: grant.id_token.expose().to_string(),
        duration_seconds: Some(grant.policy.spec.aws.session_duration_seconds),
    };
    let minted = minted
        .filter(|m| m.serves(&request, chrono::Utc::now()))
        .map(|m| m.credentials);
    let credentials = match minted {
        Some(credentials) => credentials,
        None => inner
            .config
            .aws
            .assume_role_with_web_identity(&endpoints, &request)
            .await
            .map_err(|e| Refusal::Failed(assume_role_failure(&e)))?,
    };
    progress.assumed_role_arn = Some(credentials.assumed_role_arn.clone());
    // Re-minted before they expire when the shell came from a console sign-in.
    Ok(credentials::session_clients(
        &inner.config.aws,
        &endpoints,
        credentials,
        &request,
        grant.refresh.clone(),
    ))
}

/// Who the StartSession Reason and the Started event name: `spec.user.name`, the gateway's
/// identity claim (default the `sub`), the same name the USER column shows.
fn actor_name(fresh: &NodeShellSession) -> String {
    fresh.spec.user.name.clone()
}

/// Step 3: The SSM session.
async fn start_ssm_session(
    inner: &Inner,
    fresh: &NodeShellSession,
    ssm: &SsmSessions,
    nonce: Option<&str>,
    progress: &mut Progress,
) -> Result<SessionStream, Refusal> {
    let spec = &fresh.spec;
    let reason = ssm_reason(
        &inner.config.cluster_name,
        &spec.node_name,
        &actor_name(fresh),
        &fresh.name_any(),
        spec.reason.as_deref(),
    );
    let stream = ssm
        .start_session(
            &spec.instance_id,
            Some(&spec.document_name),
            Some(&reason),
            nonce
                .map(|n| HashMap::from([(NONCE_PARAMETER.to_string(), vec![n.to_string()])]))
                .unwrap_or_default(),
        )
        .await
        .map_err(|e| Refusal::Failed(start_session_failure(&e)))?;
    progress.session_id = Some(stream.session_id.clone());
    Ok(stream)
}

/// Step 4: Its data channel, at the browser's size; the SSM session ends if it cannot open.
async fn open_channel(
    inner: &Inner,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
    ssm: &SsmSessions,
    stream: &SessionStream,
) -> Result<DataChannel, Refusal> {
    // Small on purpose: a session whose browser is behind holds these, and beyond them the
    // channel stops reading its websocket, so the agent is held back instead (see
    // `output::held_bound` for the whole per-session sum).
    let options = DataChannelOptions {
        output_buffer: SSM_OUTPUT_QUEUE_CHUNKS,
        receive: ReceiveConfig {
            max_messages: SSM_RECEIVE_WINDOW_MESSAGES,
            max_bytes: SSM_RECEIVE_WINDOW_BYTES,
            max_early_messages: SSM_RECEIVE_EARLY_MESSAGES,
            max_early_bytes: SSM_RECEIVE_EARLY_BYTES,
        },
        held: inner.config.metrics.output_held.clone(),
        stats: inner.config.metrics.ssm.clone(),
        kms: Some(ssm.kms_options(&fresh.spec.instance_id)),
        ..DataChannelOptions::new(&stream.session_id)
    };
    let channel = match DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        options,
        ssm.clone(),
    )
    .await
    {
        Ok(channel) => channel,
        Err(e) => {
            let _ = ssm.terminate_session(&stream.session_id).await;
            return Err(Refusal::Failed(channel_failure(&e)));
        }
    };
    if let Err(e) = channel.resize(u32::from(grant.cols), u32::from(grant.rows)) {
        warn!(session = %fresh.name_any(), error = %e, "initial resize failed");
    }
    Ok(channel)
}

/// The Active status the session starts with: open row, and the transcript once stored.
fn first_snapshot(
    inner: &Inner,
    fresh: &NodeShellSession,
    ssm_session_id: &str,
    now: Timestamp,
    row: &AuditRow,
    stored_transcript: Option<&Transcript>,
) -> NodeShellSessionStatus {
    let facts = ActiveFacts {
        pod: inner.config.pod_name.clone(),
        ssm_session_id: ssm_session_id.to_string(),
        started_at: now,
        node: fresh.spec.node_name.clone(),
    };
    let reference = transcript_ref(&fresh.name_any());
    active_status(
        &facts,
        now,
        vec![row.record(now)],
        stored_transcript.and_then(|t| t.status(&reference)),
    )
}

/// Step 5: Active, only if still Admitted (a Closed or Rejected session is never revived).
async fn mark_active(
    inner: &Inner,
    fresh: &NodeShellSession,
    snapshot: &NodeShellSessionStatus,
) -> Result<NodeShellSession, Refusal> {
    let name = fresh.name_any();
    let retry = StatusRetry {
        attempts: Some(ACTIVE_WRITE_ATTEMPTS),
        pause: inner.config.settings.status_throttle,
    };
    let mut current = fresh.clone();
    for attempt in 0..ACTIVE_WRITE_ATTEMPTS {
        let rv = current.metadata.resource_version.clone();
        let e = match inner
            .status
            .apply(&name, snapshot, ApplyMode::Force, rv.as_deref())
            .await
        {
            Ok(written) => return Ok(written),
            Err(e) => e,
        };
        let failure = WriteFailure::of(&e);
        if failure != WriteFailure::Conflict {
            inner.config.metrics.status_failures.inc();
            warn!(session = %name, error = %e, "writing Active failed; retrying");
        }
        match retry.after(attempt, failure) {
            RetryStep::Reread => match inner.status.get(&name).await {
                Ok(again) if again.phase() == SessionPhase::Admitted => current = again,
                Ok(again) => return Err(Refusal::Frame(not_admitted(&again))),
                Err(e) => warn!(session = %name, error = %e, "re-reading the session failed"),
            },
            RetryStep::Wait(pause) => tokio::time::sleep(pause).await,
            RetryStep::GiveUp => break,
        }
    }
    Err(Refusal::Failed(StartFailure {
        code: ErrorCode::Internal,
        reason: crate::api::SessionReason::StartFailed,
        message: format!("the session {name} could not be marked Active; try again"),
        retryable: true,
    }))
}

/// Step 6: The open row, the Started event, the start metric and the log line.
fn announce(inner: &Inner, written: &NodeShellSession, row: &AuditRow, ssm_session_id: &str) {
    let name = written.name_any();
    let spec = &written.spec;
    if let Err(e) = inner.config.audit.emit(row) {
        warn!(session = %name, error = %e, "writing the open audit row failed");
    }
    inner.events.publish(
        written,
        false,
        "SessionStarted",
        format!(
            "SSM session {ssm_session_id} started on {} ({}) for {} through gateway {}",
            spec.node_name,
            spec.instance_id,
            actor_name(written),
            inner.config.pod_name
        ),
    );
    inner.config.metrics.start("success");
    info!(session = %name, ssm_session = %ssm_session_id, node = %spec.node_name, "session started");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a running session keeps of its object for its whole life carries no
    /// managedFields (a few KB of JSON maps per session), and loses nothing it reads.
    #[test]
    fn a_running_session_keeps_its_object_without_managed_fields() {
        use crate::api::NodeShellSession;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut written = NodeShellSession::new("shell-1", Default::default());
        written.metadata.uid = Some("uid-1".into());
        written.spec.node_name = "node-a".into();
        written.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("nodeshell-gateway".into()),
            ..ManagedFieldsEntry::default()
        }]);
        let kept = kept(written);
        assert_eq!(kept.metadata.managed_fields, None);
        assert_eq!(kept.metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(kept.spec.node_name, "node-a");
    }

    /// The task an attach spawns (`start_and_run`): the start (STS, StartSession, the data
    /// channel, the first transcript and status writes) runs boxed in it, and since
    /// `1ef28da` the session (and its close) in a task of its own (`driver::run`, whose
    /// size `driver::tests` asserts). The name is from when this task was the session's.
    #[tokio::test]
    async fn the_session_task_does_not_reserve_room_for_its_start() {
        use crate::api::{NodeShellPolicy, NodeShellSession};
        use crate::gateway::audit::{AuditSink, ClientInfo};
        use crate::gateway::config::{GatewayArgs, GatewayConfig, parse_file};
        use crate::gateway::handover::{Caller, IdToken};
        use crate::gateway::live::{LiveConfig, LiveSessions};
        let args = GatewayArgs {
            oidc_issuer: Some("https://issuer.example".into()),
            oidc_client_id: Some("nodeshell".into()),
            ..GatewayArgs::default()
        };
        let config = GatewayConfig::resolve(&args, parse_file("{}").unwrap()).unwrap();
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let live = LiveSessions::new(LiveConfig::new(&config, client, AuditSink::capture()));
        let grant = AttachGrant {
            caller: Caller {
                sub: "alice".into(),
                email: None,
                name: "alice".into(),
                groups: vec![],
                tier: None,
            },
            id_token: IdToken::new("token"),
            refresh: None,
            session: NodeShellSession::new("shell-1", Default::default()),
            policy: NodeShellPolicy::new("default", Default::default()),
            cols: 80,
            rows: 24,
            client: ClientInfo::default(),
            minted: None,
        };
        let (answer, _) = oneshot::channel();
        let task = start_and_run(live.inner.clone(), Box::new(grant), answer);
        let bytes = std::mem::size_of_val(&task);
        // Unoptimised build (this test): 25,016 B with the start inline, 22,376 B with only
        // the close inline, 14,160 B with both boxed.
        assert!(bytes <= 16 * 1024, "the session task reserves {bytes} B");
    }

    #[test]
    fn only_a_recording_that_can_refuse_the_session_is_stored_before_aws() {
        use crate::api::PolicyTranscriptS3;
        let s3 = |required| PolicyTranscriptS3 {
            bucket: "b".into(),
            prefix: String::new(),
            region: None,
            kms_key_id: None,
            retention_days: 0,
            required,
        };
        let optional = PolicyTranscript::default();
        assert!(!optional.required, "the default transcript is optional");
        assert!(!recording_can_refuse(&optional));
        let required = PolicyTranscript {
            required: true,
            ..PolicyTranscript::default()
        };
        assert!(recording_can_refuse(&required));
        let required_sink = PolicyTranscript {
            s3: Some(s3(true)),
            ..PolicyTranscript::default()
        };
        assert!(recording_can_refuse(&required_sink));
        let optional_sink = PolicyTranscript {
            s3: Some(s3(false)),
            ..PolicyTranscript::default()
        };
        assert!(!recording_can_refuse(&optional_sink));
        let off = PolicyTranscript {
            enabled: false,
            s3: Some(s3(true)),
            ..PolicyTranscript::default()
        };
        assert!(!recording_can_refuse(&off), "nothing is recorded");
    }

    #[test]
    fn the_ssm_reason_names_cluster_node_and_actor_within_256_chars() {
        let r = ssm_reason("prod", "ip-10-0-0-1", "alice@example.com", "shell-1", None);
        assert_eq!(
            r,
            "nodeshell: cluster prod, node ip-10-0-0-1, by alice@example.com, session shell-1"
        );
        let long = ssm_reason(&"c".repeat(300), "n\nx", "a", "s", None);
        assert_eq!(long.chars().count(), 256);
        assert!(!ssm_reason("c", "n\nx", "a", "s", None).contains('\n'));
    }

    #[test]
    fn the_typed_reason_reaches_ssm_on_one_line_within_256_chars() {
        let r = ssm_reason(
            "prod",
            "n1",
            "alice",
            "shell-1",
            Some(" INC-42:\r\ndisk full "),
        );
        assert_eq!(
            r,
            "nodeshell: cluster prod, node n1, by alice, session shell-1: INC-42:  disk full"
        );
        assert_eq!(
            ssm_reason("p", "n", "a", "s", Some("  ")),
            "nodeshell: cluster p, node n, by a, session s"
        );
        let long = ssm_reason("p", "n", "a", "s", Some(&"é".repeat(1024)));
        assert_eq!(long.chars().count(), 256);
        assert!(long.chars().all(|c| !c.is_control()));
    }
}
