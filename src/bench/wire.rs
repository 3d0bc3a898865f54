//! The load generator's MQTT 3.1.1 packets, encoded and framed with rumqttc's codec
//! (`rumqttc::mqttbytes`): every packet a run sends is encoded before it starts and
//! written as bytes, so the codec never stands in the hot loop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use anyhow::Context;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, SubAck, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{PacketType, QoS};

/// The keep-alive the bench connections announce: the raw subscriber and the probe
/// never ping, so it must outlast a run's quiet stretches.
const KEEP_ALIVE_S: u16 = 60;
/// MQTT's largest packet (a remaining length of four bytes).
const MAX_PACKET: usize = 268_435_455;

/// Encodes `packet`. The codec fails only on a packet over [`MAX_PACKET`] or a QoS 1
/// PUBLISH with packet id 0; the bench sends neither (its topics and payloads are a
/// few bytes, its QoS 1 ids start at 1), so a failure is a bug and panics.
fn encode(packet: &Packet, out: &mut Vec<u8>) {
    let mut b = BytesMut::with_capacity(packet.size() + 5);
    if let Err(e) = packet.write(&mut b, MAX_PACKET) {
        panic!("cannot encode {packet:?}: {e}");
    }
    out.extend_from_slice(&b);
}

/// Encodes an MQTT 3.1.1 CONNECT with a clean session.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut c = Connect::new(client_id);
    c.keep_alive = KEEP_ALIVE_S;
    let mut p = Vec::new();
    encode(&Packet::Connect(c), &mut p);
    p
}

/// Encodes a SUBSCRIBE (packet id 1) to one filter at QoS 0.
pub fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut s = Subscribe::new(filter, QoS::AtMostOnce);
    s.pkid = 1;
    let mut p = Vec::new();
    encode(&Packet::Subscribe(s), &mut p);
    p
}

/// Appends an MQTT PUBLISH at QoS 0.
pub fn put_publish(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    encode(
        &Packet::Publish(Publish::new(topic, QoS::AtMostOnce, payload)),
        out,
    );
}

/// A QoS 1 PUBLISH with packet id 1, and the offset of its two packet id bytes (to be
/// overwritten with each send's id).
pub(super) fn qos1_publish(topic: &str, payload: &[u8]) -> (Vec<u8>, usize) {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
    p.pkid = 1;
    let mut out = Vec::new();
    encode(&Packet::Publish(p), &mut out);
    let pkid_at = out.len() - payload.len() - 2;
    (out, pkid_at)
}

/// An MQTT DISCONNECT.
pub(super) fn disconnect_packet() -> Vec<u8> {
    let mut p = Vec::new();
    encode(&Packet::Disconnect, &mut p);
    p
}

/// Splits whole MQTT packets off the front of `buf`, calling `f(type, frame length)`
/// for each; returns the bytes consumed (a partial packet at the end is left, and so is
/// everything from a malformed header on).
pub fn parse_packets(buf: &[u8], mut f: impl FnMut(PacketType, usize)) -> usize {
    let mut at = 0;
    while let Ok(h) = rumqttc::mqttbytes::check(buf[at..].iter(), MAX_PACKET) {
        if let Ok(kind) = h.packet_type() {
            f(kind, h.frame_length());
        }
        at += h.frame_length();
    }
    at
}

/// Reads one whole packet of at most `N` bytes from `s` and decodes it.
fn read_packet<const N: usize>(s: &mut TcpStream) -> anyhow::Result<Packet> {
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; N];
    loop {
        if rumqttc::mqttbytes::check(buf.iter(), N).is_ok() {
            return Packet::read(&mut buf, N).map_err(|e| anyhow::anyhow!("{e:?}"));
        }
        anyhow::ensure!(buf.len() < N, "a packet longer than {N} bytes");
        let n = s.read(&mut chunk[..N - buf.len()])?;
        anyhow::ensure!(n > 0, "the connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens an MQTT connection and waits for a successful CONNACK.
pub(super) fn mqtt_connect(addr: SocketAddr, client_id: &str) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("while connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.write_all(&connect_packet(client_id))?;
    let ack = read_packet::<4>(&mut s)
        .with_context(|| format!("while waiting for the CONNACK from {addr}"))?;
    anyhow::ensure!(
        matches!(
            ack,
            Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            })
        ),
        "broker at {addr} refused the connection: {ack:?}"
    );
    Ok(s)
}

/// Subscribes `s` to `filter` at QoS 0 and waits for a granted SUBACK.
pub(super) fn mqtt_subscribe(s: &mut TcpStream, filter: &str) -> anyhow::Result<()> {
    s.write_all(&subscribe_packet(filter))?;
    let ack = read_packet::<5>(s).context("while waiting for the SUBACK")?;
    let granted = matches!(&ack, Packet::SubAck(SubAck { return_codes, .. })
        if matches!(return_codes.first(), Some(SubscribeReasonCode::Success(_))));
    anyhow::ensure!(granted, "broker refused the subscription: {ack:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_valid_mqtt() {
        let mut p = Vec::new();
        put_publish(&mut p, "a/b", b"1.5");
        assert_eq!(p, vec![0x30, 8, 0, 3, b'a', b'/', b'b', b'1', b'.', b'5']);
        let mut long = Vec::new();
        put_publish(&mut long, "t", &[b'x'; 200]);
        assert_eq!(&long[..3], &[0x30, (203 % 128) | 0x80, 1]);
        let c = connect_packet("id");
        assert_eq!(c[0], 0x10);
        assert_eq!(c[1] as usize, c.len() - 2);
        assert_eq!(
            c,
            vec![0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'i', b'd']
        );
        let s = subscribe_packet("a/#");
        assert_eq!(s, vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 0]);
        let (mut q, at) = qos1_publish("a", b"42");
        q[at..at + 2].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(q, vec![0x32, 7, 0, 1, b'a', 0, 7, b'4', b'2']);
        assert_eq!(disconnect_packet(), vec![0xe0, 0]);
    }

    #[test]
    fn parse_packets_splits_a_stream_and_keeps_a_partial_tail() {
        let mut stream = Vec::new();
        put_publish(&mut stream, "a", b"1");
        stream.extend_from_slice(&[0x40, 2, 0, 9]);
        put_publish(&mut stream, "t", &[b'x'; 200]);
        let whole = stream.len();
        stream.extend_from_slice(&[0x30, 5, 0]);
        let mut seen = Vec::new();
        let used = parse_packets(&stream, |kind, len| seen.push((kind, len)));
        assert_eq!(used, whole);
        assert_eq!(
            seen,
            vec![
                (PacketType::Publish, 2 + 4),
                (PacketType::PubAck, 2 + 2),
                (PacketType::Publish, 3 + 203)
            ]
        );
    }
}
