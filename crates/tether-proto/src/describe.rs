//! Readings that describe themselves: what a channel's payload members mean
//! ([`FieldDescription`], [`Fields`]), the commands a device takes, and its
//! signal strength. The messages are in `device.rs` and `receiver.rs`.
//!
//! A description is written once, next to the reading it describes, as a
//! `const` (no allocation, no derive):
//!
//! ```
//! use tether_proto::{DescribeChannel, FieldDescription, Fields};
//!
//! #[derive(serde::Serialize)]
//! struct Reading {
//!     centi_celsius: i32,
//!     humidity: u8,
//! }
//!
//! const CLIMATE: DescribeChannel<'static> = DescribeChannel::new(
//!     "kitchen/climate",
//!     Fields::new(&[
//!         FieldDescription::new("centi_celsius")
//!             .with_label("Temperature")
//!             .with_unit("°C")
//!             .with_scale(0.01)
//!             .with_decimals(1),
//!         FieldDescription::new("humidity")
//!             .with_label("Humidity")
//!             .with_unit("%")
//!             .with_range(0.0, 100.0),
//!     ]),
//! );
//!
//! let mut json = String::new();
//! CLIMATE.fields.write_json(&mut json)?;
//! assert_eq!(
//!     json,
//!     r#"[{"key":"centi_celsius","label":"Temperature","unit":"°C","scale":0.01,"decimals":1},{"key":"humidity","label":"Humidity","unit":"%","min":0,"max":100}]"#
//! );
//! assert_eq!(CLIMATE.fields.validate(), Ok(()));
//! # Ok::<(), core::fmt::Error>(())
//! ```
//!
//! On the wire the field list is JSON text (`docs/protocol.md` section 2,
//! "Readings that describe themselves"): a byte string in the binary
//! encoding, the array itself in the JSON encoding, so a server stores it
//! and a browser reads it as they are. Decoders check only its length; a
//! server checks the rest with `Fields::parse` (feature `std`).

use core::fmt::{self, Write};
use core::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decimal::{Decimal, write_number};
use crate::error::{Field, FieldError};
use crate::limits::{validate_channel, validate_device_id};
use crate::payload::Payload;

/// Field descriptions in one [`Fields`] list, at most.
pub const MAX_FIELDS: usize = 16;
/// The JSON text of a [`Fields`] list, in bytes, at most.
pub const MAX_FIELDS_LEN: usize = 2048;
/// [`FieldDescription::key`], in bytes, at most.
pub const MAX_KEY_LEN: usize = 32;
/// [`FieldDescription::label`] and `DescribeCommand.label`, in bytes, at
/// most.
pub const MAX_LABEL_LEN: usize = 32;
/// [`FieldDescription::unit`], in bytes, at most.
pub const MAX_UNIT_LEN: usize = 16;
/// [`FieldDescription::decimals`] at most.
pub const MAX_DECIMALS: u8 = 9;
/// The magnitude of a scale and of a range bound, at most (so every number
/// prints as a short plain decimal). Both are also decimals of at most
/// [`MAX_FRACTION_DIGITS`](crate::MAX_FRACTION_DIGITS) fraction digits (`0.01`, not `1.0 / 3.0`): they
/// print without `core::fmt`'s float code.
pub const MAX_MAGNITUDE: f64 = 1e15;
/// The magnitude of a scale, at least.
pub const MIN_SCALE: f64 = 1e-12;
/// `DescribeCommand.example`, in bytes, at most.
pub const MAX_EXAMPLE_LEN: usize = 256;
/// The lowest `Status.rssi_dbm`.
pub const MIN_RSSI_DBM: i16 = -150;

/// Device → server: what the members of one channel's payload mean. Sent
/// after `Welcome`, before the session's records (tether-core sends its
/// configured descriptions on every connection); replaces the device's
/// earlier description of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DescribeChannel<'a> {
    /// The channel described.
    pub channel: &'a str,
    /// Its payload members (1 to [`MAX_FIELDS`]).
    #[serde(borrow)]
    pub fields: Fields<'a>,
}

impl<'a> DescribeChannel<'a> {
    /// `channel`'s payload members mean `fields`.
    #[must_use]
    pub const fn new(channel: &'a str, fields: Fields<'a>) -> Self {
        DescribeChannel { channel, fields }
    }

    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_channel(self.channel)?;
        self.fields.validate()
    }
}

/// Device → server: a command the device takes, so that a dashboard can
/// offer it. Sent after `Welcome` like [`DescribeChannel`]; the commands a
/// device describes in one session replace those of its earlier sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DescribeCommand<'a> {
    /// The command's channel (what `Command.channel` will say).
    pub channel: &'a str,
    /// For people, e.g. `Relay on/off` (label text, 0 to
    /// [`MAX_LABEL_LEN`] bytes).
    pub label: &'a str,
    /// A payload the command takes, to start from (JSON, at most
    /// [`MAX_EXAMPLE_LEN`] bytes; `null` for none).
    #[serde(borrow)]
    pub example: Payload<'a>,
}

impl<'a> DescribeCommand<'a> {
    /// The command on `channel`, without a label or an example.
    #[must_use]
    pub const fn new(channel: &'a str) -> Self {
        DescribeCommand {
            channel,
            label: "",
            example: Payload::NULL,
        }
    }

    /// For people.
    #[must_use]
    pub const fn with_label(mut self, label: &'a str) -> Self {
        self.label = label;
        self
    }

    /// A payload it takes, as JSON text (e.g. `{"on":true}`).
    #[must_use]
    pub const fn with_example(mut self, json: &'a str) -> Self {
        self.example = Payload::from_json_str(json);
        self
    }

    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_channel(self.channel)?;
        if self.label.len() > MAX_LABEL_LEN {
            return Err(FieldError::TooLong(Field::Label));
        }
        if !is_label_text(self.label) {
            return Err(FieldError::Invalid(Field::Label));
        }
        if self.example.len() > MAX_EXAMPLE_LEN {
            return Err(FieldError::TooLong(Field::Example));
        }
        if self.example.is_empty() {
            return Err(FieldError::Invalid(Field::Example));
        }
        Ok(())
    }
}

/// Device → server: how the device is doing. Sent when it has something
/// to say (tether-core: after `Welcome`, and when the signal strength
/// changed, at most once a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Status {
    /// The WiFi signal strength (RSSI), dBm, from [`MIN_RSSI_DBM`] to 0;
    /// `None`: not known.
    pub rssi_dbm: Option<i16>,
}

impl Status {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self.rssi_dbm {
            Some(rssi) if !(MIN_RSSI_DBM..=0).contains(&rssi) => {
                Err(FieldError::Invalid(Field::RssiDbm))
            }
            _ => Ok(()),
        }
    }
}

/// Server → receiver: what a device said the members of a channel's
/// payload mean (its [`DescribeChannel`], as the server stores it).
/// Sent only to receivers that asked: `"describe":true` in the JSON form
/// of their `Subscribe` (`docs/protocol.md` section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Description<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The device that described it.
    pub device: &'a str,
    /// Its payload members.
    #[serde(borrow)]
    pub fields: Fields<'a>,
}

impl Description<'_> {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_channel(self.channel)?;
        validate_device_id(self.device)?;
        self.fields.validate()
    }
}

/// What one numeric member of a channel's payload means: shown as
/// `value × scale` in `unit`, with `decimals` decimals, on an axis from
/// `min` to `max` (in shown units).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct FieldDescription<'a> {
    /// The payload member: a top-level member name of the JSON object the
    /// device publishes, or `""` when the payload itself is the number.
    /// ASCII letters, digits, `_` `-` `.`; at most [`MAX_KEY_LEN`] bytes.
    #[serde(borrow)]
    pub key: &'a str,
    /// For people, e.g. `Temperature` (empty: show the key). Label text:
    /// UTF-8 without control characters, `"` or `\`; at most
    /// [`MAX_LABEL_LEN`] bytes.
    #[serde(borrow, default)]
    pub label: &'a str,
    /// The unit of the shown value, e.g. `°C` (label text, at most
    /// [`MAX_UNIT_LEN`] bytes; empty: none).
    #[serde(borrow, default)]
    pub unit: &'a str,
    /// The shown value is the member's value times this (e.g. `0.01` for
    /// hundredths of a degree); finite, not zero, magnitude from
    /// [`MIN_SCALE`] to [`MAX_MAGNITUDE`], at most [`MAX_FRACTION_DIGITS`](crate::MAX_FRACTION_DIGITS)
    /// fraction digits.
    #[serde(default = "one")]
    pub scale: f64,
    /// Decimals to show (at most [`MAX_DECIMALS`]); `None`: as many as the
    /// value has.
    #[serde(default)]
    pub decimals: Option<u8>,
    /// The lowest value the quantity can take, in shown units.
    #[serde(default)]
    pub min: Option<f64>,
    /// The highest value the quantity can take, in shown units.
    #[serde(default)]
    pub max: Option<f64>,
}

const fn one() -> f64 {
    1.0
}

impl<'a> FieldDescription<'a> {
    /// The payload member `key`, shown as it is.
    #[must_use]
    pub const fn new(key: &'a str) -> Self {
        FieldDescription {
            key,
            label: "",
            unit: "",
            scale: 1.0,
            decimals: None,
            min: None,
            max: None,
        }
    }

    /// For people.
    #[must_use]
    pub const fn with_label(mut self, label: &'a str) -> Self {
        self.label = label;
        self
    }

    /// The unit of the shown value.
    #[must_use]
    pub const fn with_unit(mut self, unit: &'a str) -> Self {
        self.unit = unit;
        self
    }

    /// The shown value is the member's value times `scale`.
    #[must_use]
    pub const fn with_scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// Decimals to show.
    #[must_use]
    pub const fn with_decimals(mut self, decimals: u8) -> Self {
        self.decimals = Some(decimals);
        self
    }

    /// The range of the quantity, in shown units.
    #[must_use]
    pub const fn with_range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    /// Checks every rule of the description; errors name [`Field::Fields`].
    pub fn validate(&self) -> Result<(), FieldError> {
        let invalid = FieldError::Invalid(Field::Fields);
        if self.key.len() > MAX_KEY_LEN
            || self.label.len() > MAX_LABEL_LEN
            || self.unit.len() > MAX_UNIT_LEN
        {
            return Err(FieldError::TooLong(Field::Fields));
        }
        let key_ok = self
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        // Finite, at most MAX_MAGNITUDE, at most 12 fraction digits.
        let magnitude_ok = |value: f64| Decimal::of(value).is_some();
        let range_ok = match (self.min, self.max) {
            (Some(min), Some(max)) => magnitude_ok(min) && magnitude_ok(max) && min < max,
            (Some(bound), None) | (None, Some(bound)) => magnitude_ok(bound),
            (None, None) => true,
        };
        if !key_ok
            || !is_label_text(self.label)
            || !is_label_text(self.unit)
            || !magnitude_ok(self.scale)
            || self.scale.abs() < MIN_SCALE
            || self.decimals.is_some_and(|d| d > MAX_DECIMALS)
            || !range_ok
        {
            return Err(invalid);
        }
        Ok(())
    }

    /// Writes the description's JSON object, leaving out members at their
    /// defaults. Strings are written as they are (label text never needs
    /// escaping); numbers as plain decimals (`0.01`, `-40`).
    pub fn write_json<W: Write>(&self, out: &mut W) -> fmt::Result {
        write!(out, "{{\"key\":\"{}\"", self.key)?;
        if !self.label.is_empty() {
            write!(out, ",\"label\":\"{}\"", self.label)?;
        }
        if !self.unit.is_empty() {
            write!(out, ",\"unit\":\"{}\"", self.unit)?;
        }
        if self.scale != 1.0 {
            out.write_str(",\"scale\":")?;
            write_number(self.scale, out)?;
        }
        if let Some(decimals) = self.decimals {
            write!(out, ",\"decimals\":{decimals}")?;
        }
        if let Some(min) = self.min {
            out.write_str(",\"min\":")?;
            write_number(min, out)?;
        }
        if let Some(max) = self.max {
            out.write_str(",\"max\":")?;
            write_number(max, out)?;
        }
        out.write_char('}')
    }
}

/// Whether `text` is label text: UTF-8 without control characters (C0,
/// DEL, C1), `"` or `\`, so JSON never escapes it.
pub(crate) fn is_label_text(text: &str) -> bool {
    text.chars()
        .all(|c| !c.is_control() && c != '"' && c != '\\')
}

/// The field descriptions of one channel: a list a device writes as a
/// `const` ([`Fields::new`]), or the JSON text a decoder borrowed from a
/// message ([`Fields::from_json`]). Either way it travels as the same JSON
/// array, and two lists are equal when their JSON texts are.
#[derive(Clone, Copy)]
pub struct Fields<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    Described(&'a [FieldDescription<'a>]),
    Json(&'a [u8]),
}

impl<'a> Fields<'a> {
    /// A list of descriptions (1 to [`MAX_FIELDS`]).
    #[must_use]
    pub const fn new(fields: &'a [FieldDescription<'a>]) -> Self {
        Fields(Repr::Described(fields))
    }

    /// JSON text of a field list, as received (checked by
    /// [`validate`](Self::validate) for its length only).
    #[must_use]
    pub const fn from_json(json: &'a [u8]) -> Self {
        Fields(Repr::Json(json))
    }

    /// Writes the JSON array.
    ///
    /// # Errors
    /// `out` failed, or the list came from bytes that are not UTF-8.
    pub fn write_json<W: Write>(&self, out: &mut W) -> fmt::Result {
        match self.0 {
            Repr::Described(fields) => {
                out.write_char('[')?;
                for (index, field) in fields.iter().enumerate() {
                    if index > 0 {
                        out.write_char(',')?;
                    }
                    field.write_json(out)?;
                }
                out.write_char(']')
            }
            Repr::Json(bytes) => {
                out.write_str(core::str::from_utf8(bytes).map_err(|_| fmt::Error)?)
            }
        }
    }

    /// Bytes of the JSON text.
    #[must_use]
    pub fn json_len(&self) -> usize {
        match self.0 {
            Repr::Described(_) => {
                let mut counter = Counter(0);
                match self.write_json(&mut counter) {
                    Ok(()) => counter.0,
                    Err(_) => usize::MAX,
                }
            }
            Repr::Json(bytes) => bytes.len(),
        }
    }

    /// Checks the list: its JSON text is at most [`MAX_FIELDS_LEN`] bytes,
    /// and a list of descriptions holds 1 to [`MAX_FIELDS`] valid ones with
    /// distinct keys. (JSON text from a decoder is checked fully by
    /// `parse`, feature `std`.)
    pub fn validate(&self) -> Result<(), FieldError> {
        let len = self.json_len();
        if len > MAX_FIELDS_LEN {
            return Err(FieldError::TooLong(Field::Fields));
        }
        match self.0 {
            Repr::Described(fields) => check_list(fields),
            Repr::Json([]) => Err(FieldError::Invalid(Field::Fields)),
            Repr::Json(_) => Ok(()),
        }
    }

    /// Reads the list (from JSON text, or as given) and checks every rule
    /// of `docs/protocol.md`: a JSON array of 1 to [`MAX_FIELDS`] objects
    /// with distinct keys, each a valid [`FieldDescription`] (members not
    /// defined there are ignored; escaped strings are refused).
    ///
    /// # Errors
    /// The first rule broken, naming [`Field::Fields`].
    #[cfg(feature = "std")]
    pub fn parse(&self) -> Result<alloc::vec::Vec<FieldDescription<'a>>, FieldError> {
        self.validate()?;
        let fields: alloc::vec::Vec<FieldDescription<'a>> = match self.0 {
            Repr::Described(fields) => fields.to_vec(),
            Repr::Json(bytes) => {
                serde_json::from_slice(bytes).map_err(|_| FieldError::Invalid(Field::Fields))?
            }
        };
        check_list(&fields)?;
        Ok(fields)
    }

    /// The JSON text, canonical: what [`Fields::new`] of the same
    /// descriptions writes (for a list from JSON text: after `parse`).
    #[cfg(feature = "std")]
    #[must_use]
    pub fn to_json_string(&self) -> alloc::string::String {
        let mut json = alloc::string::String::new();
        // Writing into a String fails only for non-UTF-8 bytes, which
        // `parse` has refused.
        let _ = self.write_json(&mut json);
        json
    }

    /// Feeds the JSON text to `sink`, byte by byte (`true`: go on).
    pub(crate) fn for_each_byte(&self, mut sink: impl FnMut(u8) -> bool) -> Result<(), ()> {
        struct Bytes<F>(F);
        impl<F: FnMut(u8) -> bool> Write for Bytes<F> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for b in s.bytes() {
                    if !(self.0)(b) {
                        return Err(fmt::Error);
                    }
                }
                Ok(())
            }
        }
        match self.0 {
            Repr::Json(bytes) => {
                for &b in bytes {
                    if !sink(b) {
                        return Err(());
                    }
                }
                Ok(())
            }
            Repr::Described(_) => self.write_json(&mut Bytes(sink)).map_err(|_| ()),
        }
    }
}

fn check_list(fields: &[FieldDescription<'_>]) -> Result<(), FieldError> {
    if fields.is_empty() {
        return Err(FieldError::Invalid(Field::Fields));
    }
    if fields.len() > MAX_FIELDS {
        return Err(FieldError::TooLong(Field::Fields));
    }
    for (index, field) in fields.iter().enumerate() {
        field.validate()?;
        let earlier = fields.get(..index).unwrap_or_default();
        if earlier.iter().any(|other| other.key == field.key) {
            return Err(FieldError::Invalid(Field::Fields));
        }
    }
    Ok(())
}

/// Counts what is written.
struct Counter(usize);

impl Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.saturating_add(s.len());
        Ok(())
    }
}

impl PartialEq for Fields<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.0, other.0) {
            (Repr::Json(a), Repr::Json(b)) => a == b,
            (Repr::Json(bytes), Repr::Described(_)) => other.writes(bytes),
            (Repr::Described(_), Repr::Json(bytes)) => self.writes(bytes),
            (Repr::Described(a), Repr::Described(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_text(y))
            }
        }
    }
}

impl Fields<'_> {
    /// Whether the JSON text is exactly `bytes` (streamed, no buffer).
    fn writes(&self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        let streamed = self.for_each_byte(|b| match rest.split_first() {
            Some((&first, tail)) if first == b => {
                rest = tail;
                true
            }
            _ => false,
        });
        streamed.is_ok() && rest.is_empty()
    }
}

impl FieldDescription<'_> {
    /// Whether the two write the same JSON text: the same strings, and
    /// numbers with the same bits (distinct finite values print
    /// differently, `-0` and `0` included).
    fn same_text(&self, other: &Self) -> bool {
        let bits = |value: Option<f64>| value.map(f64::to_bits);
        self.key == other.key
            && self.label == other.label
            && self.unit == other.unit
            && self.scale.to_bits() == other.scale.to_bits()
            && self.decimals == other.decimals
            && bits(self.min) == bits(other.min)
            && bits(self.max) == bits(other.max)
    }
}

impl Eq for Fields<'_> {}

impl Hash for Fields<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let _ = self.for_each_byte(|b| {
            state.write_u8(b);
            true
        });
    }
}

impl fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fields(")?;
        if self.write_json(f).is_err() {
            f.write_str("<not UTF-8>")?;
        }
        f.write_str(")")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Fields<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self.0 {
            Repr::Described(fields) => defmt::write!(f, "Fields({} described)", fields.len()),
            Repr::Json(bytes) => defmt::write!(f, "Fields({=[u8]:a})", bytes),
        }
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serialize_json(self, serializer)
        } else {
            match self.0 {
                Repr::Json(bytes) => serializer.serialize_bytes(bytes),
                // A postcard byte string is a varint length and the bytes:
                // written as a tuple (which postcard writes without a
                // prefix) of the length and each byte, the text streams
                // straight into the frame, with no buffer.
                Repr::Described(_) => {
                    use serde::ser::{Error as _, SerializeTuple};
                    let len = self.json_len();
                    let mut tuple = serializer.serialize_tuple(len.saturating_add(1))?;
                    tuple.serialize_element(&(len as u64))?;
                    let mut failed = None;
                    let _ = self.for_each_byte(|b| match tuple.serialize_element(&b) {
                        Ok(()) => true,
                        Err(error) => {
                            failed = Some(error);
                            false
                        }
                    });
                    if let Some(error) = failed {
                        return Err(error);
                    }
                    if len == usize::MAX {
                        return Err(S::Error::custom("field list is not UTF-8"));
                    }
                    tuple.end()
                }
            }
        }
    }
}

#[cfg(feature = "std")]
fn serialize_json<S: Serializer>(fields: &Fields<'_>, serializer: S) -> Result<S::Ok, S::Error> {
    let text = match fields.0 {
        Repr::Json(bytes) => core::str::from_utf8(bytes)
            .map_err(serde::ser::Error::custom)?
            .into(),
        Repr::Described(_) => fields.to_json_string(),
    };
    let raw = serde_json::value::RawValue::from_string(text)
        .map_err(|_| serde::ser::Error::custom("field list is not JSON"))?;
    // `RawValue` leaves out surrounding whitespace: refuse it (as payloads
    // do), so that a list survives a trip through JSON unchanged.
    if raw.get().len() != fields.json_len() {
        return Err(serde::ser::Error::custom(
            "field list is not one JSON value",
        ));
    }
    raw.serialize(serializer)
}

#[cfg(not(feature = "std"))]
fn serialize_json<S: Serializer>(_: &Fields<'_>, _: S) -> Result<S::Ok, S::Error> {
    Err(serde::ser::Error::custom(
        "tether-proto: JSON needs the `std` feature",
    ))
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserialize_json(deserializer)
        } else {
            <&'de [u8]>::deserialize(deserializer).map(Fields::from_json)
        }
    }
}

#[cfg(feature = "std")]
fn deserialize_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Fields<'de>, D::Error> {
    <&'de serde_json::value::RawValue>::deserialize(deserializer)
        .map(|raw| Fields::from_json(raw.get().as_bytes()))
}

#[cfg(not(feature = "std"))]
fn deserialize_json<'de, D: Deserializer<'de>>(_: D) -> Result<Fields<'de>, D::Error> {
    Err(serde::de::Error::custom(
        "tether-proto: JSON needs the `std` feature",
    ))
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::string::String;
    use alloc::vec::Vec;

    use super::*;

    const CLIMATE: &[FieldDescription<'static>] = &[
        FieldDescription::new("centi_celsius")
            .with_label("Temperature")
            .with_unit("°C")
            .with_scale(0.01)
            .with_decimals(1)
            .with_range(-40.0, 85.0),
        FieldDescription::new("humidity").with_unit("%"),
    ];

    fn json(fields: &Fields<'_>) -> String {
        let mut text = String::new();
        fields.write_json(&mut text).unwrap();
        text
    }

    #[test]
    fn writes_plain_json_without_defaults() {
        let fields = Fields::new(CLIMATE);
        let text = json(&fields);
        assert_eq!(
            text,
            r#"[{"key":"centi_celsius","label":"Temperature","unit":"°C","scale":0.01,"decimals":1,"min":-40,"max":85},{"key":"humidity","unit":"%"}]"#
        );
        assert_eq!(fields.json_len(), text.len());
        assert_eq!(fields.validate(), Ok(()));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value[0]["scale"], 0.01);
        assert_eq!(value[1]["key"], "humidity");
    }

    #[test]
    fn equality_compares_the_json_texts() {
        let described = Fields::new(CLIMATE);
        let text = json(&described);
        let received = Fields::from_json(text.as_bytes());
        assert_eq!(described, received);
        assert_eq!(received, described);
        let mut longer = text.clone();
        longer.push(' ');
        assert_ne!(described, Fields::from_json(longer.as_bytes()));
        let mut changed = text.clone().into_bytes();
        let last = changed.len() - 3;
        changed[last] = b'9';
        assert_ne!(described, Fields::from_json(&changed));
        // Texts longer than the comparison's 64-byte chunks.
        let long: Vec<FieldDescription<'_>> = (0..10).map(|_| CLIMATE[0]).collect();
        let text = json(&Fields::new(&long));
        assert!(text.len() > 500);
        assert_eq!(Fields::new(&long), Fields::from_json(text.as_bytes()));
        let mut other = text.clone().into_bytes();
        other[400] = b'X';
        assert_ne!(Fields::new(&long), Fields::from_json(&other));
    }

    #[test]
    fn descriptions_that_break_a_rule_are_refused() {
        let ok = FieldDescription::new("t");
        assert_eq!(ok.validate(), Ok(()));
        let invalid = Err(FieldError::Invalid(Field::Fields));
        let too_long = Err(FieldError::TooLong(Field::Fields));
        for (field, expected) in [
            (FieldDescription::new("a b"), invalid),
            (FieldDescription::new("a\"b"), invalid),
            (FieldDescription::new(&"k".repeat(33)), too_long),
            (ok.with_label("a\"b"), invalid),
            (ok.with_label("a\\b"), invalid),
            (ok.with_label("tab\there"), invalid),
            (ok.with_label("c1\u{85}"), invalid),
            (ok.with_label(&"é".repeat(17)), too_long),
            (ok.with_unit("µg/m³"), Ok(())),
            (ok.with_unit("12345678901234567"), too_long),
            (ok.with_scale(0.0), invalid),
            (ok.with_scale(f64::NAN), invalid),
            (ok.with_scale(f64::INFINITY), invalid),
            (ok.with_scale(1e-13), invalid),
            (ok.with_scale(1e16), invalid),
            (ok.with_scale(-0.5), Ok(())),
            (ok.with_decimals(10), invalid),
            (ok.with_range(5.0, 5.0), invalid),
            (ok.with_range(0.0, 1e16), invalid),
            (
                FieldDescription {
                    min: Some(f64::NAN),
                    ..ok
                },
                invalid,
            ),
            (
                FieldDescription {
                    max: Some(3.0),
                    ..ok
                },
                Ok(()),
            ),
        ] {
            assert_eq!(field.validate(), expected, "{field:?}");
        }
        assert_eq!(Fields::new(&[]).validate(), invalid);
        assert_eq!(Fields::new(&[ok, ok]).validate(), invalid, "duplicate keys");
        let many = [FieldDescription::new("a"); 17];
        assert!(Fields::new(&many).validate().is_err());
        assert_eq!(Fields::from_json(b"").validate(), invalid);
        let huge = "x".repeat(MAX_FIELDS_LEN + 1);
        assert_eq!(Fields::from_json(huge.as_bytes()).validate(), too_long);
    }

    #[test]
    fn numbers_print_as_plain_decimals() {
        let mut text = String::new();
        FieldDescription::new("k")
            .with_scale(1e-12)
            .with_range(-1e15, 1e15)
            .write_json(&mut text)
            .unwrap();
        assert_eq!(
            text,
            r#"{"key":"k","scale":0.000000000001,"min":-1000000000000000,"max":1000000000000000}"#
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["scale"], 1e-12);
    }

    #[cfg(feature = "std")]
    #[test]
    fn parse_reads_and_checks_json() {
        let text = json(&Fields::new(CLIMATE));
        let parsed = Fields::from_json(text.as_bytes()).parse().unwrap();
        assert_eq!(parsed, CLIMATE);
        // Defaults, unknown members ignored, canonical text.
        let loose = br#"[{"unit":"V","key":"v","future":[1,2],"scale":1.0}]"#;
        let parsed = Fields::from_json(loose).parse().unwrap();
        assert_eq!(parsed, [FieldDescription::new("v").with_unit("V")]);
        assert_eq!(
            Fields::new(&parsed).to_json_string(),
            r#"[{"key":"v","unit":"V"}]"#
        );
        for bad in [
            &b"[]"[..],
            b"{}",
            b"[{}]",
            b"[{\"key\":1}]",
            b"[{\"key\":\"a b\"}]",
            b"[{\"key\":\"a\",\"scale\":0}]",
            b"[{\"key\":\"a\",\"unit\":\"\\u00b0C\"}]",
            b"[{\"key\":\"a\"},{\"key\":\"a\"}]",
            b"[{\"key\":\"a\",\"decimals\":-1}]",
            b"not json",
        ] {
            assert!(
                Fields::from_json(bad).parse().is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_field_list_with_whitespace_around_it_has_no_json_form() {
        // Binary decoders check only the length; the JSON encoder must not
        // trim the text (the trimmed message would differ from this one).
        for fields in [&b" [1]"[..], b"[1] ", b"xx"] {
            let mut frame = alloc::vec![1, 3, 1, b't'];
            frame.push(u8::try_from(fields.len()).unwrap());
            frame.extend_from_slice(fields);
            let message = crate::DeviceToServer::decode(&frame).unwrap();
            assert_eq!(message.to_json(), Err(crate::EncodeError::PayloadNotJson));
        }
    }
}
