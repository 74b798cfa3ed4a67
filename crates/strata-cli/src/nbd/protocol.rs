//! The NBD wire protocol, server side: the fixed newstyle handshake and the transmission
//! phase's request and simple-reply framing.
//!
//! Reference: <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>. Only
//! what a read-only export needs is implemented: `NBD_OPT_EXPORT_NAME`, `NBD_OPT_INFO`,
//! `NBD_OPT_GO`, `NBD_OPT_LIST`, `NBD_OPT_ABORT`; every other option (TLS, structured replies,
//! metadata contexts) is refused with `NBD_REP_ERR_UNSUP`, which clients handle by falling
//! back to simple replies.

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

/// Option replies.
pub const REP_ACK: u32 = 1;
/// An export name (reply to NBD_OPT_LIST).
pub const REP_SERVER: u32 = 2;
/// Export information (reply to NBD_OPT_INFO / NBD_OPT_GO).
pub const REP_INFO: u32 = 3;
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
    Transmission,
    /// The client went away or aborted.
    Closed,
}

/// The export as the handshake presents it.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// Names clients may ask for; the empty name (the default export) always matches.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
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
                return Ok(Negotiated::Transmission);
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
                    return Ok(Negotiated::Transmission);
                }
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
        }
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

        send_option(&mut client, 8, &[]).await; // NBD_OPT_STRUCTURED_REPLY
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
            Negotiated::Transmission
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
        send_option(&mut client, OPT_EXPORT_NAME, b"snap-0abc").await;
        assert_eq!(client.read_u64().await.expect("read"), 1 << 30);
        let _flags = client.read_u16().await.expect("read");
        let mut zeros = [1u8; 124];
        client.read_exact(&mut zeros).await.expect("read");
        assert!(zeros.iter().all(|&b| b == 0));
        assert_eq!(
            task.await.expect("join").expect("handshake"),
            Negotiated::Transmission
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
