//! What the fuzz targets share: how an input is read as a choice, cut points and a payload.
//!
//! An input is `[pick] [n] [n cut bytes] payload...`. Seeds stay readable that way: two
//! bytes (`\0\0`: first choice, no cuts) and then a real SMTP dialogue or message.

/// One fuzz input, taken apart.
pub struct Input<'a> {
    /// Chooses settings or a variant; each target says how.
    pub pick: u8,
    /// Where to cut the payload, read by each target (usually with [`pieces`]).
    pub cuts: &'a [u8],
    /// The bytes under test.
    pub payload: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data`; missing parts are empty (a short input is still an input).
    pub fn new(data: &'a [u8]) -> Self {
        let pick = data.first().copied().unwrap_or(0);
        let n = usize::from(data.get(1).copied().unwrap_or(0));
        let rest = data.get(2..).unwrap_or_default();
        let (cuts, payload) = rest.split_at(n.min(rest.len()));
        Input {
            pick,
            cuts,
            payload,
        }
    }
}

/// `payload` cut into pieces of `c + 1` octets for each cut byte `c` (1 to 256), and the rest
/// in one piece; no piece is empty.
pub fn pieces<'a>(payload: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut rest = payload;
    let mut out = Vec::new();
    for &c in cuts {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((usize::from(c) + 1).min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}
