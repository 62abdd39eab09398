//! A small SMSC on 127.0.0.1 for tests and demos: it binds transceivers,
//! answers `submit_sm` (or throttles, or refuses a destination, as told),
//! sends delivery receipts and messages from handsets as `deliver_sm`, and
//! can drop the connection, unbind, or send bytes that are not a PDU.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::pdu::{Body, Pdu, Sm, cmd, status, tag};

/// How the SMSC behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The system id and password it binds.
    pub credentials: (String, String),
    /// Answer this many submits with `ESME_RTHROTTLED` before accepting.
    pub throttle_first: usize,
    /// Close the connection after this many accepted submits (once).
    pub drop_after: Option<usize>,
    /// Send a `DELIVRD` receipt after each accepted submit.
    pub receipts: bool,
    /// Destinations refused with a status.
    pub refuse: Vec<(String, u32)>,
    /// Wait this long before answering a submit.
    pub answer_delay: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            credentials: ("switchboard".into(), "secret".into()),
            throttle_first: 0,
            drop_after: None,
            receipts: false,
            refuse: Vec::new(),
            answer_delay: Duration::ZERO,
        }
    }
}

/// A submit as the SMSC received it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The id it answered (empty if it refused the submit).
    pub message_id: String,
    /// The status it answered.
    pub status: u32,
    /// The PDU's body.
    pub sm: Sm,
}

#[derive(Default)]
struct State {
    submitted: Vec<Submitted>,
    binds: usize,
    failed_binds: usize,
    nacks: usize,
    enquiries: usize,
    unbinds: usize,
    throttled: usize,
    dropped: bool,
    outstanding: usize,
    max_outstanding: usize,
    session: Option<(mpsc::Sender<Vec<u8>>, Arc<tokio::sync::Notify>)>,
    awaiting: HashMap<u32, oneshot::Sender<u32>>,
}

/// A running fake SMSC.
#[derive(Clone)]
pub struct FakeSmsc {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    state: Arc<Mutex<State>>,
    seq: Arc<AtomicUsize>,
}

impl FakeSmsc {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<FakeSmsc> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let smsc = FakeSmsc {
            addr: listener.local_addr()?,
            behaviour: Arc::new(Mutex::new(behaviour)),
            state: Arc::default(),
            seq: Arc::new(AtomicUsize::new(1_000)),
        };
        let s = smsc.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(s.clone().session(stream));
            }
        });
        Ok(smsc)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how it behaves from now on.
    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Every submit received, in order.
    pub fn submitted(&self) -> Vec<Submitted> {
        self.st().submitted.clone()
    }

    /// Successful binds so far.
    pub fn binds(&self) -> usize {
        self.st().binds
    }

    /// Refused binds so far.
    pub fn failed_binds(&self) -> usize {
        self.st().failed_binds
    }

    /// `generic_nack`s received (answers to PDUs the client could not read).
    pub fn nacks(&self) -> usize {
        self.st().nacks
    }

    /// `unbind`s received from the client.
    pub fn unbinds(&self) -> usize {
        self.st().unbinds
    }

    /// `enquire_link`s received.
    pub fn enquiries(&self) -> usize {
        self.st().enquiries
    }

    /// Submits answered with a throttle error.
    pub fn throttled(&self) -> usize {
        self.st().throttled
    }

    /// The most submits that were outstanding at once.
    pub fn max_outstanding(&self) -> usize {
        self.st().max_outstanding
    }

    /// Is a client bound now?
    pub fn connected(&self) -> bool {
        self.st().session.is_some()
    }

    /// Writes raw bytes to the bound client.
    pub async fn send_raw(&self, bytes: Vec<u8>) -> bool {
        let tx = self.st().session.as_ref().map(|(tx, _)| tx.clone());
        match tx {
            Some(tx) => tx.send(bytes).await.is_ok(),
            None => false,
        }
    }

    /// Closes the client's connection.
    pub fn kick(&self) {
        if let Some((_, kicked)) = self.st().session.take() {
            kicked.notify_one();
        }
    }

    /// Asks the client to unbind.
    pub async fn unbind(&self) -> bool {
        let seq = self.next_seq();
        self.send_raw(Pdu::empty(cmd::UNBIND, 0, seq).encode())
            .await
    }

    fn next_seq(&self) -> u32 {
        u32::try_from(self.seq.fetch_add(1, Ordering::Relaxed)).unwrap_or(1)
    }

    /// Sends a `deliver_sm` and answers the client's `deliver_sm_resp`
    /// status (`None` if none came within 5 s).
    pub async fn deliver(&self, sm: Sm) -> Option<u32> {
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.st().awaiting.insert(seq, tx);
        let pdu = Pdu {
            command_id: cmd::DELIVER_SM,
            status: 0,
            sequence: seq,
            body: Body::Sm(Box::new(sm)),
        };
        if !self.send_raw(pdu.encode()).await {
            return None;
        }
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()
    }

    /// A message from a handset (`from`, `to` as E.164), GSM or UCS-2.
    pub async fn mo(&self, from: &str, to: &str, text: &str) -> Option<u32> {
        let (data_coding, short_message) = match super::text::gsm7_encode(text) {
            Some(s) => (super::text::DC_DEFAULT, s),
            None => (super::text::DC_UCS2, super::text::ucs2_encode(text)),
        };
        self.deliver(Sm {
            source_ton: 1,
            source_npi: 1,
            source_addr: from.trim_start_matches('+').into(),
            dest_ton: 1,
            dest_npi: 1,
            destination_addr: to.trim_start_matches('+').into(),
            data_coding,
            short_message,
            ..Sm::default()
        })
        .await
    }

    /// A delivery receipt for `id` in `stat` (`DELIVRD`, `UNDELIV`, …),
    /// with the Appendix B text and, if `tlvs`, the TLVs too.
    pub async fn receipt(&self, id: &str, stat: &str, tlvs: bool) -> Option<u32> {
        self.deliver(receipt_sm(id, stat, tlvs)).await
    }

    async fn session(self, stream: tokio::net::TcpStream) {
        let (reader, mut writer) = stream.into_split();
        let (mut reads, read_task) = super::spawn_reader(reader);
        let kicked = Arc::new(tokio::sync::Notify::new());
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        let writer_task = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if writer.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let mut bound = false;
        loop {
            let read = tokio::select! {
                r = reads.recv() => r,
                () = kicked.notified() => break,
            };
            let pdu = match read {
                None | Some(Err(_)) => break,
                Some(Ok(Err((seq, _)))) => {
                    let _ = tx
                        .send(Pdu::empty(cmd::GENERIC_NACK, status::INVCMDLEN, seq).encode())
                        .await;
                    continue;
                }
                Some(Ok(Ok(pdu))) => pdu,
            };
            let reply = |command_id: u32, st: u32, body: Body| Pdu {
                command_id,
                status: st,
                sequence: pdu.sequence,
                body,
            };
            match (&pdu.body, pdu.command_id) {
                (
                    Body::Bind {
                        system_id,
                        password,
                        ..
                    },
                    cmd::BIND_TRANSCEIVER,
                ) => {
                    let (id, pw) = self
                        .behaviour
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .credentials
                        .clone();
                    if *system_id == id && *password == pw {
                        bound = true;
                        {
                            let mut st = self.st();
                            st.binds += 1;
                            st.session = Some((tx.clone(), kicked.clone()));
                        }
                        let body = Body::BindResp {
                            system_id: "fakesmsc".into(),
                        };
                        let _ = tx
                            .send(reply(cmd::BIND_TRANSCEIVER_RESP, 0, body).encode())
                            .await;
                    } else {
                        self.st().failed_binds += 1;
                        let st = if *system_id == id {
                            status::INVPASWD
                        } else {
                            status::INVSYSID
                        };
                        let _ = tx
                            .send(Pdu::empty(cmd::BIND_TRANSCEIVER_RESP, st, pdu.sequence).encode())
                            .await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        break;
                    }
                }
                (Body::Sm(sm), cmd::SUBMIT_SM) => {
                    if !bound {
                        let _ = tx
                            .send(
                                Pdu::empty(cmd::SUBMIT_SM_RESP, status::INVBNDSTS, pdu.sequence)
                                    .encode(),
                            )
                            .await;
                        continue;
                    }
                    self.clone()
                        .answer_submit(tx.clone(), pdu.sequence, (**sm).clone())
                        .await;
                }
                (_, cmd::ENQUIRE_LINK) => {
                    self.st().enquiries += 1;
                    let _ = tx
                        .send(Pdu::empty(cmd::ENQUIRE_LINK_RESP, 0, pdu.sequence).encode())
                        .await;
                }
                (_, cmd::UNBIND) => {
                    self.st().unbinds += 1;
                    let _ = tx
                        .send(Pdu::empty(cmd::UNBIND_RESP, 0, pdu.sequence).encode())
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    break;
                }
                (_, cmd::DELIVER_SM_RESP) => {
                    if let Some(waiter) = self.st().awaiting.remove(&pdu.sequence) {
                        let _ = waiter.send(pdu.status);
                    }
                }
                (_, cmd::GENERIC_NACK) => self.st().nacks += 1,
                _ => {}
            }
        }
        {
            let mut st = self.st();
            if st
                .session
                .as_ref()
                .is_some_and(|(s, _)| s.same_channel(&tx))
            {
                st.session = None;
            }
        }
        writer_task.abort();
        read_task.abort();
    }

    async fn answer_submit(self, tx: mpsc::Sender<Vec<u8>>, seq: u32, sm: Sm) {
        let b = self
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (code, id, drop_now) = {
            let mut st = self.st();
            st.outstanding += 1;
            st.max_outstanding = st.max_outstanding.max(st.outstanding);
            let refused = b
                .refuse
                .iter()
                .find(|(d, _)| *d == sm.destination_addr)
                .map(|(_, s)| *s);
            let accepted_so_far = st
                .submitted
                .iter()
                .filter(|s| s.status == status::OK)
                .count();
            if st.throttled < b.throttle_first {
                st.throttled += 1;
                (status::THROTTLED, String::new(), false)
            } else if let Some(code) = refused {
                (code, String::new(), false)
            } else {
                let id = format!("{:010X}", self.seq.fetch_add(1, Ordering::Relaxed));
                let drop_now =
                    b.drop_after.is_some_and(|n| accepted_so_far + 1 >= n) && !st.dropped;
                if drop_now {
                    st.dropped = true;
                }
                (status::OK, id, drop_now)
            }
        };
        tokio::spawn(async move {
            tokio::time::sleep(b.answer_delay).await;
            self.st().outstanding -= 1;
            self.st().submitted.push(Submitted {
                message_id: id.clone(),
                status: code,
                sm,
            });
            if drop_now {
                // Accepted, but the answer is lost with the connection.
                self.kick();
                return;
            }
            let resp = Pdu {
                command_id: cmd::SUBMIT_SM_RESP,
                status: code,
                sequence: seq,
                body: Body::SmResp {
                    message_id: id.clone(),
                },
            };
            let _ = tx.send(resp.encode()).await;
            if code == status::OK && b.receipts {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = self.receipt(&id, "DELIVRD", true).await;
            }
        });
    }
}

/// A `deliver_sm` that is a delivery receipt.
pub fn receipt_sm(id: &str, stat: &str, tlvs: bool) -> Sm {
    let text = format!(
        "id:{id} sub:001 dlvrd:{} submit date:2611211200 done date:2611211201 stat:{stat} err:{} text:",
        if stat == "DELIVRD" { "001" } else { "000" },
        if stat == "DELIVRD" { "000" } else { "001" },
    );
    let state: u8 = match stat {
        "DELIVRD" => 2,
        "EXPIRED" => 3,
        "DELETED" => 4,
        "UNDELIV" => 5,
        "ACCEPTD" => 6,
        "REJECTD" => 8,
        _ => 7,
    };
    let mut id_tlv = id.as_bytes().to_vec();
    id_tlv.push(0);
    Sm {
        esm_class: super::text::ESM_RECEIPT,
        short_message: text.into_bytes(),
        tlvs: if tlvs {
            vec![
                (tag::RECEIPTED_MESSAGE_ID, id_tlv),
                (tag::MESSAGE_STATE, vec![state]),
            ]
        } else {
            Vec::new()
        },
        ..Sm::default()
    }
}
