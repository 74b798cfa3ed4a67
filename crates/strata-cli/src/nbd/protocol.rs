//! The NBD wire protocol, server side: the fixed newstyle handshake and the transmission
//! phase's request, simple-reply and structured-reply framing.
//!
//! Reference: <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>. What a
//! read-only export needs is implemented: `NBD_OPT_EXPORT_NAME`, `NBD_OPT_INFO`,
//! `NBD_OPT_GO`, `NBD_OPT_LIST`, `NBD_OPT_ABORT`, `NBD_OPT_STRUCTURED_REPLY` and the
//! metadata-context options `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT` (for
//! `NBD_CMD_BLOCK_STATUS`); every other option (TLS, extended headers) is refused with
//! `NBD_REP_ERR_UNSUP`, which clients handle by doing without.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// "NBDMAGIC": the server's greeting.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle negotiation, and the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// The server will not send the 124 zero bytes after NBD_OPT_EXPORT_NAME if the client agrees.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flags.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1;
/// The client does not want the 124 zero bytes.
pub const CLIENT_NO_ZEROES: u32 = 2;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
/// Client gives up.
pub const OPT_ABORT: u32 = 2;
/// List exports.
pub const OPT_LIST: u32 = 3;
/// Describe an export.
pub const OPT_INFO: u32 = 6;
/// Describe an export and start transmission.
pub const OPT_GO: u32 = 7;
/// Use structured replies in the transmission phase.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// List the metadata contexts that match queries.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Select the metadata contexts NBD_CMD_BLOCK_STATUS reports.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option replies.
pub const REP_ACK: u32 = 1;
/// An export name (reply to NBD_OPT_LIST).
pub const REP_SERVER: u32 = 2;
/// Export information (reply to NBD_OPT_INFO / NBD_OPT_GO).
pub const REP_INFO: u32 = 3;
/// A metadata context (reply to NBD_OPT_LIST/SET_META_CONTEXT): `u32 id`, then its name.
pub const REP_META_CONTEXT: u32 = 4;
/// The option is not supported.
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
/// The option's data is malformed.
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
/// No such export.
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum request sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1;
/// The export cannot be written.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// NBD_CMD_FLUSH is accepted.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Several connections see the same data (true: the snapshot is immutable).
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// NBD_CMD_CACHE is accepted.
pub const TFLAG_SEND_CACHE: u16 = 1 << 10;

/// Commands.
pub const CMD_READ: u16 = 0;
/// Write (refused: read-only).
pub const CMD_WRITE: u16 = 1;
/// Disconnect.
pub const CMD_DISC: u16 = 2;
/// Flush (nothing to flush).
pub const CMD_FLUSH: u16 = 3;
/// Trim (refused).
pub const CMD_TRIM: u16 = 4;
/// Prefetch a range.
pub const CMD_CACHE: u16 = 5;
/// Write zeroes (refused).
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Report the status of a range in the selected metadata contexts.
pub const CMD_BLOCK_STATUS: u16 = 7;
/// Command flag of NBD_CMD_BLOCK_STATUS: one descriptor per context is enough.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// Prefix of every structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Chunk flag: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1;
/// Chunk type: data at an offset (`u64 offset`, then the bytes).
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: block status of one context (`u32 id`, then `u32 length, u32 flags` pairs).
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: an error (`u32 errno, u16 message length`, then the message).
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation` flags: the range is not allocated.
pub const STATE_HOLE: u32 = 1;
/// `base:allocation` flags: the range reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:*` flag: the range is dirty (changed).
pub const STATE_DIRTY: u32 = 1;

/// The metadata context of allocation status, which every block-status client knows.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The namespace of qemu's dirty bitmaps; Strata's "bitmap" is the blocks changed since a
/// base snapshot.
pub const QEMU_DIRTY_BITMAP: &str = "qemu:dirty-bitmap:";

/// Errors (errno values, as the protocol defines them).
pub const EPERM: u32 = 1;
/// I/O error.
pub const EIO: u32 = 5;
/// Invalid request.
pub const EINVAL: u32 = 22;

/// Largest option payload accepted (names are short; this bounds memory per connection).
const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Largest request size advertised and accepted (the protocol's customary maximum).
pub const MAX_REQUEST_LEN: u32 = 32 * 1024 * 1024;

/// What the handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    /// Move to the transmission phase.
    Transmission(Session),
    /// The client went away or aborted.
    Closed,
}

/// What a connection's transmission phase may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Replies to reads and block-status requests are structured.
    pub structured: bool,
    /// Selected metadata contexts: (id sent to the client, index into
    /// [`ExportInfo::contexts`]).
    pub contexts: Vec<(u32, usize)>,
}

/// The export as the handshake presents it.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// Names clients may ask for; the empty name (the default export) always matches.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Metadata contexts offered, e.g. `base:allocation`.
    pub contexts: Vec<String>,
}

impl ExportInfo {
    fn matches(&self, requested: &[u8]) -> bool {
        requested.is_empty() || requested == self.name.as_bytes()
    }

    fn flags() -> u16 {
        TFLAG_HAS_FLAGS
            | TFLAG_READ_ONLY
            | TFLAG_SEND_FLUSH
            | TFLAG_CAN_MULTI_CONN
            | TFLAG_SEND_CACHE
    }
}

/// Run the fixed newstyle handshake on a fresh connection.
pub async fn handshake<S>(stream: &mut S, export: &ExportInfo) -> io::Result<Negotiated>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_u64(NBD_MAGIC).await?;
    stream.write_u64(IHAVEOPT).await?;
    stream
        .write_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
        .await?;
    stream.flush().await?;
    let client_flags = stream.read_u32().await?;
    if client_flags & CLIENT_FIXED_NEWSTYLE == 0 {
        // Without "fixed", option errors cannot be reported; every current client sets it.
        return Ok(Negotiated::Closed);
    }
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
    let mut session = Session::default();
    loop {
        if stream.read_u64().await? != IHAVEOPT {
            return Ok(Negotiated::Closed);
        }
        let option = stream.read_u32().await?;
        let len = stream.read_u32().await?;
        if len > MAX_OPTION_LEN {
            return Ok(Negotiated::Closed);
        }
        let mut data = vec![0u8; len as usize];
        stream.read_exact(&mut data).await?;
        match option {
            OPT_EXPORT_NAME => {
                if !export.matches(&data) {
                    // This option has no error reply: closing is the protocol's answer.
                    return Ok(Negotiated::Closed);
                }
                stream.write_u64(export.size).await?;
                stream.write_u16(ExportInfo::flags()).await?;
                if !no_zeroes {
                    stream.write_all(&[0u8; 124]).await?;
                }
                stream.flush().await?;
                // Structured replies and contexts negotiated before still apply.
                return Ok(Negotiated::Transmission(session));
            }
            OPT_INFO | OPT_GO => {
                let Some(name) = parse_info_request(&data) else {
                    option_reply(stream, option, REP_ERR_INVALID, b"malformed request").await?;
                    continue;
                };
                if !export.matches(name) {
                    option_reply(stream, option, REP_ERR_UNKNOWN, b"no such export").await?;
                    continue;
                }
                let mut info = Vec::with_capacity(12);
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&export.size.to_be_bytes());
                info.extend_from_slice(&ExportInfo::flags().to_be_bytes());
                option_reply(stream, option, REP_INFO, &info).await?;
                let mut sizes = Vec::with_capacity(14);
                sizes.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                sizes.extend_from_slice(&1u32.to_be_bytes());
                sizes.extend_from_slice(&4096u32.to_be_bytes());
                sizes.extend_from_slice(&MAX_REQUEST_LEN.to_be_bytes());
                option_reply(stream, option, REP_INFO, &sizes).await?;
                option_reply(stream, option, REP_ACK, &[]).await?;
                if option == OPT_GO {
                    return Ok(Negotiated::Transmission(session));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    session.structured = true;
                    option_reply(stream, option, REP_ACK, &[]).await?;
                } else {
                    option_reply(stream, option, REP_ERR_INVALID, b"no data expected").await?;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let Some((name, queries)) = parse_meta_context_request(&data) else {
                    option_reply(stream, option, REP_ERR_INVALID, b"malformed request").await?;
                    continue;
                };
                if option == OPT_SET_META_CONTEXT && !session.structured {
                    option_reply(
                        stream,
                        option,
                        REP_ERR_INVALID,
                        b"negotiate structured replies first",
                    )
                    .await?;
                    continue;
                }
                if !export.matches(name) {
                    option_reply(stream, option, REP_ERR_UNKNOWN, b"no such export").await?;
                    continue;
                }
                let set = option == OPT_SET_META_CONTEXT;
                let chosen = select_contexts(&export.contexts, &queries, set);
                if set {
                    session.contexts.clear();
                }
                for index in chosen {
                    // Ids are 1-based in SET answers; LIST answers carry 0.
                    let id = if set {
                        u32::try_from(index + 1).unwrap_or(u32::MAX)
                    } else {
                        0
                    };
                    if set {
                        session.contexts.push((id, index));
                    }
                    let mut reply = id.to_be_bytes().to_vec();
                    reply.extend_from_slice(export.contexts[index].as_bytes());
                    option_reply(stream, option, REP_META_CONTEXT, &reply).await?;
                }
                option_reply(stream, option, REP_ACK, &[]).await?;
            }
            OPT_LIST => {
                let mut entry = Vec::with_capacity(4 + export.name.len());
                let name_len = u32::try_from(export.name.len()).unwrap_or(0);
                entry.extend_from_slice(&name_len.to_be_bytes());
                entry.extend_from_slice(export.name.as_bytes());
                option_reply(stream, option, REP_SERVER, &entry).await?;
                option_reply(stream, option, REP_ACK, &[]).await?;
            }
            OPT_ABORT => {
                // The client may already have closed; an error here changes nothing.
                let _ = option_reply(stream, option, REP_ACK, &[]).await;
                return Ok(Negotiated::Closed);
            }
            _ => {
                option_reply(stream, option, REP_ERR_UNSUP, b"not supported").await?;
            }
        }
    }
}

/// The export name and queries of an NBD_OPT_LIST/SET_META_CONTEXT payload: `u32 length,
/// name, u32 count`, then `count` times `u32 length, query`.
fn parse_meta_context_request(data: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let u32_at = |at: usize| -> Option<usize> {
        usize::try_from(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?)).ok()
    };
    let name_len = u32_at(0)?;
    let name = data.get(4..4 + name_len)?;
    let count = u32_at(4 + name_len)?;
    let mut at = 8 + name_len;
    let mut queries = Vec::new();
    for _ in 0..count {
        let len = u32_at(at)?;
        queries.push(data.get(at + 4..at + 4 + len)?);
        at += 4 + len;
    }
    (at == data.len()).then_some((name, queries))
}

/// Which offered contexts answer `queries`. SET takes exact names only; LIST also takes a
/// namespace prefix (`base:`, `qemu:dirty-bitmap:`), and no query at all means every one.
fn select_contexts(offered: &[String], queries: &[&[u8]], set: bool) -> Vec<usize> {
    let mut chosen = Vec::new();
    for (index, name) in offered.iter().enumerate() {
        let wanted = if queries.is_empty() {
            !set
        } else {
            queries.iter().any(|query| {
                *query == name.as_bytes()
                    || (!set && query.ends_with(b":") && name.as_bytes().starts_with(query))
            })
        };
        if wanted {
            chosen.push(index);
        }
    }
    chosen
}

/// The export name of an NBD_OPT_INFO/GO payload: `u32 length, name, u16 count, u16 × count`.
fn parse_info_request(data: &[u8]) -> Option<&[u8]> {
    let len = usize::try_from(u32::from_be_bytes(data.get(..4)?.try_into().ok()?)).ok()?;
    let name = data.get(4..4 + len)?;
    let count = usize::from(u16::from_be_bytes(
        data.get(4 + len..6 + len)?.try_into().ok()?,
    ));
    (data.len() == 6 + len + 2 * count).then_some(name)
}

async fn option_reply<S>(stream: &mut S, option: u32, kind: u32, data: &[u8]) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut frame = Vec::with_capacity(20 + data.len());
    frame.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    frame.extend_from_slice(&option.to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(data);
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// One transmission-phase request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command (`CMD_*`).
    pub command: u16,
    /// Opaque handle echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u32,
}

/// Read one request header; `Ok(None)` when the client closed the connection cleanly.
pub async fn read_request<S>(stream: &mut S) -> io::Result<Option<Request>>
where
    S: AsyncRead + Unpin,
{
    let mut header = [0u8; 28];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let field = |range: std::ops::Range<usize>| &header[range];
    let magic = u32::from_be_bytes(to_array(field(0..4)));
    if magic != REQUEST_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad request magic {magic:#x}"),
        ));
    }
    Ok(Some(Request {
        flags: u16::from_be_bytes(to_array(field(4..6))),
        command: u16::from_be_bytes(to_array(field(6..8))),
        cookie: u64::from_be_bytes(to_array(field(8..16))),
        offset: u64::from_be_bytes(to_array(field(16..24))),
        length: u32::from_be_bytes(to_array(field(24..28))),
    }))
}

fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(bytes);
    array
}

/// A structured reply chunk: header, then `payload`.
pub fn structured_chunk(cookie: u64, flags: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(20 + payload.len());
    frame.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    frame.extend_from_slice(&flags.to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.extend_from_slice(&cookie.to_be_bytes());
    frame.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(payload);
    frame
}

/// A structured read reply: one `OFFSET_DATA` chunk, the last.
pub fn structured_read(cookie: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + data.len());
    payload.extend_from_slice(&offset.to_be_bytes());
    payload.extend_from_slice(data);
    structured_chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, &payload)
}

/// A structured error reply (the last chunk).
pub fn structured_error(cookie: u64, error: u32) -> Vec<u8> {
    let mut payload = error.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u16.to_be_bytes());
    structured_chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, &payload)
}

/// A `BLOCK_STATUS` chunk for context `id`: `(length, flags)` descriptors.
pub fn block_status_chunk(cookie: u64, last: bool, id: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + 8 * extents.len());
    payload.extend_from_slice(&id.to_be_bytes());
    for (length, flags) in extents {
        payload.extend_from_slice(&length.to_be_bytes());
        payload.extend_from_slice(&flags.to_be_bytes());
    }
    let flags = if last { REPLY_FLAG_DONE } else { 0 };
    structured_chunk(cookie, flags, REPLY_TYPE_BLOCK_STATUS, &payload)
}

/// A simple reply frame: header, then `data` when the request was a successful read.
pub fn simple_reply(cookie: u64, error: u32, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(16 + data.len());
    frame.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    frame.extend_from_slice(&error.to_be_bytes());
    frame.extend_from_slice(&cookie.to_be_bytes());
    if error == 0 {
        frame.extend_from_slice(data);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export() -> ExportInfo {
        ExportInfo {
            name: "snap-0abc".into(),
            size: 1 << 30,
            contexts: vec![
                BASE_ALLOCATION.into(),
                format!("{QEMU_DIRTY_BITMAP}snap-0base"),
            ],
        }
    }

    fn meta_request(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&u32::try_from(name.len()).expect("len").to_be_bytes());
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&u32::try_from(queries.len()).expect("len").to_be_bytes());
        for query in queries {
            data.extend_from_slice(&u32::try_from(query.len()).expect("len").to_be_bytes());
            data.extend_from_slice(query.as_bytes());
        }
        data
    }

    #[tokio::test]
    async fn structured_replies_and_meta_contexts_are_negotiated() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { handshake(&mut server, &export()).await });
        let mut greeting = [0u8; 18];
        client.read_exact(&mut greeting).await.expect("read");
        client
            .write_u32(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)
            .await
            .expect("write");

        // SET before structured replies: refused.
        send_option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &meta_request("", &[BASE_ALLOCATION]),
        )
        .await;
        assert_eq!(read_option_reply(&mut client).await.1, REP_ERR_INVALID);

        send_option(&mut client, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(read_option_reply(&mut client).await.1, REP_ACK);

        // LIST by namespace.
        send_option(
            &mut client,
            OPT_LIST_META_CONTEXT,
            &meta_request("", &["qemu:dirty-bitmap:"]),
        )
        .await;
        let (_, kind, data) = read_option_reply(&mut client).await;
        assert_eq!(
            (kind, &data[4..]),
            (REP_META_CONTEXT, b"qemu:dirty-bitmap:snap-0base".as_slice())
        );
        assert_eq!(read_option_reply(&mut client).await.1, REP_ACK);

        // SET: exact names only; an unknown one is left out.
        send_option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &meta_request(
                "snap-0abc",
                &["qemu:dirty-bitmap:snap-0base", "nope:x", BASE_ALLOCATION],
            ),
        )
        .await;
        let (_, kind, first) = read_option_reply(&mut client).await;
        let (_, _, second) = read_option_reply(&mut client).await;
        assert_eq!(kind, REP_META_CONTEXT);
        assert_eq!(
            (&first[..4], &first[4..]),
            (1u32.to_be_bytes().as_slice(), BASE_ALLOCATION.as_bytes())
        );
        assert_eq!(&second[..4], 2u32.to_be_bytes().as_slice());
        assert_eq!(read_option_reply(&mut client).await.1, REP_ACK);

        send_option(&mut client, OPT_GO, &info_request("")).await;
        for _ in 0..3 {
            read_option_reply(&mut client).await;
        }
        assert_eq!(
            task.await.expect("join").expect("handshake"),
            Negotiated::Transmission(Session {
                structured: true,
                contexts: vec![(1, 0), (2, 1)],
            })
        );
    }

    #[test]
    fn structured_chunks_frame() {
        let chunk = block_status_chunk(9, true, 1, &[(4096, STATE_HOLE | STATE_ZERO)]);
        assert_eq!(&chunk[..4], STRUCTURED_REPLY_MAGIC.to_be_bytes().as_slice());
        assert_eq!(u16::from_be_bytes([chunk[4], chunk[5]]), REPLY_FLAG_DONE);
        assert_eq!(
            u16::from_be_bytes([chunk[6], chunk[7]]),
            REPLY_TYPE_BLOCK_STATUS
        );
        assert_eq!(u32::from_be_bytes(to_array(&chunk[16..20])), 12);
        assert_eq!(chunk.len(), 20 + 12);
        let read = structured_read(9, 512, b"abc");
        assert_eq!(u64::from_be_bytes(to_array(&read[20..28])), 512);
        assert_eq!(&read[28..], b"abc");
    }

    async fn send_option<S: AsyncWrite + Unpin>(client: &mut S, option: u32, data: &[u8]) {
        client.write_u64(IHAVEOPT).await.expect("write");
        client.write_u32(option).await.expect("write");
        client
            .write_u32(u32::try_from(data.len()).expect("len"))
            .await
            .expect("write");
        client.write_all(data).await.expect("write");
    }

    async fn read_option_reply<S: AsyncRead + Unpin>(client: &mut S) -> (u32, u32, Vec<u8>) {
        assert_eq!(client.read_u64().await.expect("read"), OPTION_REPLY_MAGIC);
        let option = client.read_u32().await.expect("read");
        let kind = client.read_u32().await.expect("read");
        let len = client.read_u32().await.expect("read");
        let mut data = vec![0; len as usize];
        client.read_exact(&mut data).await.expect("read");
        (option, kind, data)
    }

    fn info_request(name: &str) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&u32::try_from(name.len()).expect("len").to_be_bytes());
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        data
    }

    #[tokio::test]
    async fn go_negotiates_after_refusing_unknown_options_and_names() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { handshake(&mut server, &export()).await });
        assert_eq!(client.read_u64().await.expect("read"), NBD_MAGIC);
        assert_eq!(client.read_u64().await.expect("read"), IHAVEOPT);
        assert_eq!(
            client.read_u16().await.expect("read"),
            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
        );
        client
            .write_u32(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES)
            .await
            .expect("write");

        send_option(&mut client, 48, &[]).await; // NBD_OPT_EXTENDED_HEADERS
        assert_eq!(read_option_reply(&mut client).await.1, REP_ERR_UNSUP);

        send_option(&mut client, OPT_GO, &info_request("other")).await;
        assert_eq!(read_option_reply(&mut client).await.1, REP_ERR_UNKNOWN);

        send_option(&mut client, OPT_LIST, &[]).await;
        let (_, kind, data) = read_option_reply(&mut client).await;
        assert_eq!((kind, &data[4..]), (REP_SERVER, b"snap-0abc".as_slice()));
        assert_eq!(read_option_reply(&mut client).await.1, REP_ACK);

        send_option(&mut client, OPT_GO, &info_request("")).await;
        let (_, kind, data) = read_option_reply(&mut client).await;
        assert_eq!(kind, REP_INFO);
        assert_eq!(u64::from_be_bytes(to_array(&data[2..10])), 1 << 30);
        let flags = u16::from_be_bytes(to_array(&data[10..12]));
        assert_ne!(flags & TFLAG_READ_ONLY, 0);
        assert_eq!(read_option_reply(&mut client).await.1, REP_INFO);
        assert_eq!(read_option_reply(&mut client).await.1, REP_ACK);
        assert_eq!(
            task.await.expect("join").expect("handshake"),
            Negotiated::Transmission(Session::default())
        );
    }

    #[tokio::test]
    async fn export_name_sends_size_flags_and_padding() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { handshake(&mut server, &export()).await });
        let mut greeting = [0u8; 18];
        client.read_exact(&mut greeting).await.expect("read");
        client
            .write_u32(CLIENT_FIXED_NEWSTYLE)
            .await
            .expect("write");
        // Structured replies negotiated before NBD_OPT_EXPORT_NAME still count.
        send_option(&mut client, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(read_option_reply(&mut client).await.1, REP_ACK);
        send_option(&mut client, OPT_EXPORT_NAME, b"snap-0abc").await;
        assert_eq!(client.read_u64().await.expect("read"), 1 << 30);
        let _flags = client.read_u16().await.expect("read");
        let mut zeros = [1u8; 124];
        client.read_exact(&mut zeros).await.expect("read");
        assert!(zeros.iter().all(|&b| b == 0));
        assert_eq!(
            task.await.expect("join").expect("handshake"),
            Negotiated::Transmission(Session {
                structured: true,
                contexts: Vec::new(),
            })
        );
    }

    #[tokio::test]
    async fn requests_parse_and_replies_frame() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut frame = Vec::new();
        frame.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(&CMD_READ.to_be_bytes());
        frame.extend_from_slice(&77u64.to_be_bytes());
        frame.extend_from_slice(&4096u64.to_be_bytes());
        frame.extend_from_slice(&512u32.to_be_bytes());
        client.write_all(&frame).await.expect("write");
        drop(client);
        let request = read_request(&mut server)
            .await
            .expect("read")
            .expect("request");
        assert_eq!(
            (
                request.command,
                request.cookie,
                request.offset,
                request.length
            ),
            (CMD_READ, 77, 4096, 512)
        );
        assert_eq!(read_request(&mut server).await.expect("eof"), None);
        let reply = simple_reply(77, 0, b"abc");
        assert_eq!(reply.len(), 19);
        assert_eq!(simple_reply(77, EIO, b"abc").len(), 16);
    }
}
