//! AMF0 values (Adobe "Action Message Format -- AMF 0", §2.1-2.18), the encoding
//! of RTMP command messages (type 20) and data messages (type 18, e.g.
//! `@setDataFrame` / `onMetaData`).
//!
//! Decoding is defensive: nesting is capped at [`MAX_DEPTH`], the number of
//! values per decode at [`MAX_VALUES`], every length is checked against the
//! bytes left before anything is read or allocated, strings must be UTF-8,
//! unknown and unsupported markers (MovieClip, RecordSet, Reference, and the AMF3
//! switch 0x11) are errors, and an object or ECMA array must end with the
//! object-end marker.
//!
//! ECMA arrays: the count is only a hint (encoders get it wrong), so properties
//! are read up to the object-end marker, as FFmpeg does.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Deepest nesting of objects and arrays. Attack: 10,000 nested objects to
/// overflow the decoder's stack. Real commands nest two or three levels.
pub const MAX_DEPTH: usize = 32;

/// Values decoded per call (every nested value counts). Attack: an 8 MiB data
/// message of 1-byte nulls in a strict array inflating to 8 M enum values
/// (hundreds of MiB). onMetaData has a few dozen.
pub const MAX_VALUES: usize = 65_536;

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const MOVIECLIP: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0a;
    pub const DATE: u8 = 0x0b;
    pub const LONG_STRING: u8 = 0x0c;
    pub const UNSUPPORTED: u8 = 0x0d;
    pub const RECORDSET: u8 = 0x0e;
    pub const XML_DOCUMENT: u8 = 0x0f;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// An AMF0 value. Objects keep their property order.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    /// Encoded as a long string when longer than 65,535 bytes.
    String(String),
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the Unix epoch; the time zone is reserved (0).
    Date {
        millis: f64,
        timezone: i16,
    },
    LongString(String),
    Unsupported,
    XmlDocument(String),
    TypedObject {
        class_name: String,
        properties: Vec<(String, Amf0Value)>,
    },
}

/// AMF0 errors. Decode errors are the peer's fault; [`Amf0Error::KeyTooLong`]
/// and [`Amf0Error::TooLong`] are the encoder caller's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Amf0Error {
    #[error("truncated AMF0 value: needed {needed} bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    #[error("unknown AMF0 marker {0:#04x}")]
    UnknownMarker(u8),
    #[error("unsupported AMF0 marker {0:#04x} (AMF3 switch, reference, movieclip or recordset)")]
    UnsupportedMarker(u8),
    #[error("object-end marker outside an object")]
    UnexpectedObjectEnd,
    #[error("AMF0 nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_VALUES} AMF0 values in one message")]
    TooManyValues,
    #[error("strict array declares {count} elements but only {left} bytes are left")]
    ArrayTooLong { count: u32, left: usize },
    #[error("AMF0 string is not UTF-8")]
    InvalidUtf8,
    #[error("object key of {0} bytes exceeds 65535")]
    KeyTooLong(usize),
    #[error("value of {0} bytes or elements exceeds the 32-bit AMF0 limit")]
    TooLong(usize),
}

impl Amf0Value {
    /// Decodes one value from the start of `data`; returns it and the bytes used.
    pub fn decode(data: &[u8]) -> Result<(Amf0Value, usize), Amf0Error> {
        let mut r = Reader {
            data,
            pos: 0,
            values: 0,
        };
        let v = r.value(0)?;
        Ok((v, r.pos))
    }

    /// Decodes values until `data` is used up.
    pub fn decode_all(data: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
        let mut r = Reader {
            data,
            pos: 0,
            values: 0,
        };
        let mut out = Vec::new();
        while r.pos < data.len() {
            out.push(r.value(0)?);
        }
        Ok(out)
    }

    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), Amf0Error> {
        match self {
            Amf0Value::Number(n) => {
                out.put_u8(marker::NUMBER);
                out.put_f64(*n);
            }
            Amf0Value::Boolean(b) => {
                out.put_u8(marker::BOOLEAN);
                out.put_u8(u8::from(*b));
            }
            Amf0Value::String(s) | Amf0Value::LongString(s) => {
                if s.len() <= u16::MAX as usize && matches!(self, Amf0Value::String(_)) {
                    out.put_u8(marker::STRING);
                    put_short_string(out, s)?;
                } else {
                    out.put_u8(marker::LONG_STRING);
                    put_long_string(out, s)?;
                }
            }
            Amf0Value::Object(props) => {
                out.put_u8(marker::OBJECT);
                put_properties(out, props)?;
            }
            Amf0Value::Null => out.put_u8(marker::NULL),
            Amf0Value::Undefined => out.put_u8(marker::UNDEFINED),
            Amf0Value::EcmaArray(props) => {
                out.put_u8(marker::ECMA_ARRAY);
                out.put_u32(
                    u32::try_from(props.len()).map_err(|_| Amf0Error::TooLong(props.len()))?,
                );
                put_properties(out, props)?;
            }
            Amf0Value::StrictArray(items) => {
                out.put_u8(marker::STRICT_ARRAY);
                out.put_u32(
                    u32::try_from(items.len()).map_err(|_| Amf0Error::TooLong(items.len()))?,
                );
                for item in items {
                    item.encode(out)?;
                }
            }
            Amf0Value::Date { millis, timezone } => {
                out.put_u8(marker::DATE);
                out.put_f64(*millis);
                out.put_i16(*timezone);
            }
            Amf0Value::Unsupported => out.put_u8(marker::UNSUPPORTED),
            Amf0Value::XmlDocument(s) => {
                out.put_u8(marker::XML_DOCUMENT);
                put_long_string(out, s)?;
            }
            Amf0Value::TypedObject {
                class_name,
                properties,
            } => {
                out.put_u8(marker::TYPED_OBJECT);
                put_short_string(out, class_name)?;
                put_properties(out, properties)?;
            }
        }
        Ok(())
    }

    /// Encodes several values back to back (a command: name, transaction id, ...).
    pub fn encode_all(values: &[Amf0Value], out: &mut BytesMut) -> Result<(), Amf0Error> {
        values.iter().try_for_each(|v| v.encode(out))
    }

    /// The string of a String or LongString.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Properties of an Object, ECMA array or typed object.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            Amf0Value::TypedObject { properties, .. } => Some(properties),
            _ => None,
        }
    }

    /// The first property named `key`, for objects and ECMA arrays.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Builds an Object from `(&str, value)` pairs.
pub fn object<'a>(props: impl IntoIterator<Item = (&'a str, Amf0Value)>) -> Amf0Value {
    Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn put_short_string(out: &mut BytesMut, s: &str) -> Result<(), Amf0Error> {
    let len = u16::try_from(s.len()).map_err(|_| Amf0Error::KeyTooLong(s.len()))?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_long_string(out: &mut BytesMut, s: &str) -> Result<(), Amf0Error> {
    let len = u32::try_from(s.len()).map_err(|_| Amf0Error::TooLong(s.len()))?;
    out.put_u32(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_properties(out: &mut BytesMut, props: &[(String, Amf0Value)]) -> Result<(), Amf0Error> {
    for (k, v) in props {
        put_short_string(out, k)?;
        v.encode(out)?;
    }
    out.put_slice(&[0, 0, marker::OBJECT_END]);
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        let end = self.pos.checked_add(n);
        match end.and_then(|e| Some((e, self.data.get(self.pos..e)?))) {
            Some((end, s)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(Amf0Error::Truncated {
                at: self.pos,
                needed: n,
            }),
        }
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Amf0Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn string(&mut self, len: usize) -> Result<String, Amf0Error> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Amf0Error::InvalidUtf8)
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u16()? as usize;
        self.string(len)
    }

    fn long_string(&mut self) -> Result<String, Amf0Error> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        self.string(len)
    }

    /// Properties up to and including the object-end marker (key "" + 0x09).
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        let mut props = Vec::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() && self.data.get(self.pos) == Some(&marker::OBJECT_END) {
                self.pos = self.pos.saturating_add(1);
                return Ok(props);
            }
            let v = self.value(depth.saturating_add(1))?;
            props.push((key, v));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        if depth > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        self.values = self.values.saturating_add(1);
        if self.values > MAX_VALUES {
            return Err(Amf0Error::TooManyValues);
        }
        let m = self.u8()?;
        Ok(match m {
            marker::NUMBER => Amf0Value::Number(f64::from_be_bytes(self.array()?)),
            marker::BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            marker::STRING => Amf0Value::String(self.short_string()?),
            marker::OBJECT => Amf0Value::Object(self.properties(depth)?),
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED => Amf0Value::Undefined,
            marker::ECMA_ARRAY => {
                let _count_hint = self.array::<4>()?;
                Amf0Value::EcmaArray(self.properties(depth)?)
            }
            marker::OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
            marker::STRICT_ARRAY => {
                let count = u32::from_be_bytes(self.array()?);
                let left = self.data.len().saturating_sub(self.pos);
                // Every element takes at least its marker byte.
                if count as usize > left {
                    return Err(Amf0Error::ArrayTooLong { count, left });
                }
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth.saturating_add(1))?);
                }
                Amf0Value::StrictArray(items)
            }
            marker::DATE => {
                let millis = f64::from_be_bytes(self.array()?);
                let timezone = i16::from_be_bytes(self.array()?);
                Amf0Value::Date { millis, timezone }
            }
            marker::LONG_STRING => Amf0Value::LongString(self.long_string()?),
            marker::UNSUPPORTED => Amf0Value::Unsupported,
            marker::XML_DOCUMENT => Amf0Value::XmlDocument(self.long_string()?),
            marker::TYPED_OBJECT => {
                let class_name = self.short_string()?;
                Amf0Value::TypedObject {
                    class_name,
                    properties: self.properties(depth)?,
                }
            }
            marker::MOVIECLIP | marker::REFERENCE | marker::RECORDSET | marker::AVMPLUS => {
                return Err(Amf0Error::UnsupportedMarker(m))
            }
            other => return Err(Amf0Error::UnknownMarker(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &Amf0Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        v.encode(&mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn connect_command_round_trips_with_known_bytes() {
        let v = vec![
            Amf0Value::String("connect".into()),
            Amf0Value::Number(1.0),
            object([
                ("app", Amf0Value::String("live".into())),
                ("fpad", Amf0Value::Boolean(false)),
            ]),
        ];
        let mut out = BytesMut::new();
        Amf0Value::encode_all(&v, &mut out).unwrap();
        assert_eq!(&out[..10], b"\x02\x00\x07connect");
        assert_eq!(&out[10..19], &[0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[out.len() - 3..], &[0, 0, 9]);
        let back = Amf0Value::decode_all(&out).unwrap();
        assert_eq!(back, v);
        assert_eq!(back[2].get("app").and_then(Amf0Value::as_str), Some("live"));
    }

    #[test]
    fn decode_reports_consumed_length() {
        let mut bytes = enc(&Amf0Value::Number(2.5));
        bytes.extend([5, 5]);
        let (v, used) = Amf0Value::decode(&bytes).unwrap();
        assert_eq!((v, used), (Amf0Value::Number(2.5), 9));
    }

    #[test]
    fn string_longer_than_bytes_left_is_an_error() {
        assert!(matches!(
            Amf0Value::decode(b"\x02\x00\x10abc"),
            Err(Amf0Error::Truncated { .. })
        ));
        assert!(matches!(
            Amf0Value::decode(b"\x0c\xff\xff\xff\xffabc"),
            Err(Amf0Error::Truncated { .. })
        ));
        assert!(matches!(
            Amf0Value::decode(b"\x0f\x00\x00\x01\x00"),
            Err(Amf0Error::Truncated { .. })
        ));
    }

    #[test]
    fn strict_array_count_ffffffff_is_refused_without_allocating() {
        assert_eq!(
            Amf0Value::decode(b"\x0a\xff\xff\xff\xff\x05\x05"),
            Err(Amf0Error::ArrayTooLong {
                count: u32::MAX,
                left: 2
            })
        );
        // ECMA array count is only a hint: a lying count is fine if the end marker is there.
        let (v, _) = Amf0Value::decode(b"\x08\xff\xff\xff\xff\x00\x01a\x05\x00\x00\x09").unwrap();
        assert_eq!(v, Amf0Value::EcmaArray(vec![("a".into(), Amf0Value::Null)]));
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 10,000 nested objects, each opened with key "a".
        let mut bytes = vec![marker::OBJECT];
        for _ in 0..10_000 {
            bytes.extend([0, 1, b'a', marker::OBJECT]);
        }
        assert_eq!(Amf0Value::decode(&bytes), Err(Amf0Error::TooDeep));
        // 10,000 nested strict arrays
        let mut bytes = Vec::new();
        for _ in 0..10_000 {
            bytes.extend([marker::STRICT_ARRAY, 0, 0, 0, 1]);
        }
        bytes.push(marker::NULL);
        assert_eq!(Amf0Value::decode(&bytes), Err(Amf0Error::TooDeep));
        // MAX_DEPTH levels are fine.
        let mut v = Amf0Value::Null;
        for _ in 0..MAX_DEPTH {
            v = Amf0Value::StrictArray(vec![v]);
        }
        assert!(Amf0Value::decode(&enc(&v)).is_ok());
    }

    #[test]
    fn unknown_and_unsupported_markers_are_errors() {
        assert_eq!(
            Amf0Value::decode(&[0x11, 0x06]),
            Err(Amf0Error::UnsupportedMarker(0x11))
        );
        assert_eq!(
            Amf0Value::decode(&[0x07, 0, 1]),
            Err(Amf0Error::UnsupportedMarker(0x07))
        );
        assert_eq!(
            Amf0Value::decode(&[0x12]),
            Err(Amf0Error::UnknownMarker(0x12))
        );
        assert_eq!(
            Amf0Value::decode(&[0xff]),
            Err(Amf0Error::UnknownMarker(0xff))
        );
        assert_eq!(
            Amf0Value::decode(&[0x09]),
            Err(Amf0Error::UnexpectedObjectEnd)
        );
        assert!(matches!(
            Amf0Value::decode(&[]),
            Err(Amf0Error::Truncated { .. })
        ));
    }

    #[test]
    fn missing_object_end_is_an_error() {
        let mut bytes = enc(&object([("k", Amf0Value::Number(1.0))]));
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            Amf0Value::decode(&bytes),
            Err(Amf0Error::Truncated { .. })
        ));
        // "" key followed by something other than 0x09 is a property, then still no end.
        bytes.extend([0, 0, marker::NULL]);
        assert!(matches!(
            Amf0Value::decode(&bytes),
            Err(Amf0Error::Truncated { .. })
        ));
    }

    #[test]
    fn bad_utf8_is_an_error() {
        assert_eq!(
            Amf0Value::decode(b"\x02\x00\x02\xff\xfe"),
            Err(Amf0Error::InvalidUtf8)
        );
    }

    #[test]
    fn value_count_is_capped() {
        let n = MAX_VALUES as u32 + 10;
        let mut bytes = vec![marker::STRICT_ARRAY];
        bytes.extend(n.to_be_bytes());
        bytes.extend(std::iter::repeat_n(marker::NULL, n as usize));
        assert_eq!(Amf0Value::decode(&bytes), Err(Amf0Error::TooManyValues));
    }

    #[test]
    fn long_strings_switch_marker() {
        let s = "x".repeat(70_000);
        let bytes = enc(&Amf0Value::String(s.clone()));
        assert_eq!(bytes[0], marker::LONG_STRING);
        assert_eq!(
            Amf0Value::decode(&bytes).unwrap().0,
            Amf0Value::LongString(s)
        );
        let mut out = BytesMut::new();
        assert_eq!(
            object([("k".repeat(70_000).as_str(), Amf0Value::Null)]).encode(&mut out),
            Err(Amf0Error::KeyTooLong(70_000))
        );
    }

    fn arb_value() -> impl Strategy<Value = Amf0Value> {
        let leaf = prop_oneof![
            (-1e15f64..1e15).prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            ".{0,20}".prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
            Just(Amf0Value::Undefined),
            Just(Amf0Value::Unsupported),
            (-1e12f64..1e12).prop_map(|millis| Amf0Value::Date {
                millis,
                timezone: 0
            }),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Amf0Value::StrictArray),
                proptest::collection::vec(("[a-z]{1,8}", inner.clone()), 0..8)
                    .prop_map(Amf0Value::Object),
                proptest::collection::vec(("[a-z]{1,8}", inner), 0..8)
                    .prop_map(Amf0Value::EcmaArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(values in proptest::collection::vec(arb_value(), 0..5)) {
            let mut out = BytesMut::new();
            Amf0Value::encode_all(&values, &mut out).unwrap();
            prop_assert_eq!(Amf0Value::decode_all(&out).unwrap(), values);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Amf0Value::decode_all(&data);
        }
    }
}
