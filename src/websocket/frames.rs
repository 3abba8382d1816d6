//! Where a stream of WebSocket frames stands (RFC 6455 §5.2), read from the bytes as they pass
//! without holding any of them, so that the gateway only ever sends its own close frame between
//! two frames.

/// The position in one direction's stream of frames.
#[derive(Debug, Default)]
pub struct FrameCursor {
    /// The frame head read so far (up to 2 + 8 + 4 bytes).
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
}

impl FrameCursor {
    /// No frame is half through: a new frame may be sent now.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Moves past `bytes`.
    pub fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let passed = bytes
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= passed as u64;
                bytes = &bytes[passed..];
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have >= 2 && self.have == head_length(self.head[1]) {
                self.remaining = payload_length(&self.head[..self.have]);
                self.have = 0;
            }
        }
    }
}

/// A frame head's length, from its second byte: extended length and masking key included.
fn head_length(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

fn payload_length(head: &[u8]) -> u64 {
    match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&head[2..10]);
            u64::from_be_bytes(bytes)
        }
        short => u64::from(short),
    }
}

/// Close status 1001, "going away".
const GOING_AWAY: [u8; 2] = 1001u16.to_be_bytes();

/// A close frame with status 1001 as a server sends it (unmasked).
pub fn going_away_from_server() -> [u8; 4] {
    [0x88, 0x02, GOING_AWAY[0], GOING_AWAY[1]]
}

/// A close frame with status 1001 as a client sends it, masked with `mask`.
pub fn going_away_from_client(mask: [u8; 4]) -> [u8; 8] {
    [
        0x88,
        0x82,
        mask[0],
        mask[1],
        mask[2],
        mask[3],
        GOING_AWAY[0] ^ mask[0],
        GOING_AWAY[1] ^ mask[1],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a peer would send it: FIN, binary, the payload length in its shortest form.
    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut frame = vec![0x82];
        match payload_len {
            0..=125 => frame.push(mask_bit | payload_len as u8),
            126..=0xffff => {
                frame.push(mask_bit | 126);
                frame.extend((payload_len as u16).to_be_bytes());
            }
            _ => {
                frame.push(mask_bit | 127);
                frame.extend((payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend([1, 2, 3, 4]);
        }
        frame.extend(std::iter::repeat_n(0x55, payload_len));
        frame
    }

    #[test]
    fn frames_of_every_length_form_end_on_a_boundary_however_they_are_split() {
        let stream: Vec<u8> = [
            (0, false),
            (5, true),
            (125, false),
            (126, true),
            (70_000, false),
        ]
        .iter()
        .flat_map(|&(len, masked)| frame(len, masked))
        .collect();
        for chunk in [1, 2, 3, 7, 4096, stream.len()] {
            let mut cursor = FrameCursor::default();
            for piece in stream.chunks(chunk) {
                cursor.advance(piece);
            }
            assert!(cursor.at_boundary(), "split in chunks of {chunk}");
        }
        let mut cursor = FrameCursor::default();
        cursor.advance(&stream[..stream.len() - 1]);
        assert!(!cursor.at_boundary());
        let mut cursor = FrameCursor::default();
        cursor.advance(&frame(300, false)[..3]);
        assert!(!cursor.at_boundary(), "inside a head");
    }

    #[test]
    fn the_close_frames_carry_1001() {
        assert_eq!(going_away_from_server(), [0x88, 0x02, 0x03, 0xe9]);
        let masked = going_away_from_client([9, 8, 7, 6]);
        assert_eq!(&masked[..6], &[0x88, 0x82, 9, 8, 7, 6]);
        assert_eq!([masked[6] ^ 9, masked[7] ^ 8], [0x03, 0xe9]);
    }
}
