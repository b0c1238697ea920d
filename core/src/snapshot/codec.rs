//! The encoding of a section's body: every value of a state struct, field by field in
//! declaration order, little-endian and fixed-width, with nothing in between (the serde
//! data model written the way `docs/snapshot.md` describes it).
//!
//! The reader ([`decode`]) never panics and never allocates more than the bytes it is
//! given can fill: a length read from the input is checked against the bytes left before
//! anything is reserved. Every refusal names the field it was reading, as the path of
//! field names and element indices from the section's top-level struct
//! (`channels[2].count`).

use super::SnapshotError;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{ser, Deserialize, Serialize};

/// Encode `value` (infallible for the state types: every one has a fixed layout).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Encoder { out: Vec::new() };
    // The encoder's only error is a sequence of unknown length, which no state type has.
    let _ = value.serialize(&mut out);
    out.out
}

/// Decode a `T` that must fill `bytes` exactly; errors name `section` and the field.
pub fn decode<'a, T: Deserialize<'a>>(
    section: &'static str,
    bytes: &'a [u8],
) -> Result<T, SnapshotError> {
    let mut d = Decoder {
        input: bytes,
        pos: 0,
        path: Vec::new(),
    };
    let value = T::deserialize(&mut d).map_err(|e| e.into_snapshot_error(section))?;
    if d.pos != bytes.len() {
        return Err(SnapshotError::new(
            section,
            "",
            alloc::format!(
                "{} bytes after the section's last field",
                bytes.len() - d.pos
            ),
        ));
    }
    Ok(value)
}

/// An encoding or decoding error inside a section: the path of the field and why.
#[derive(Debug)]
pub struct CodecError {
    field: Option<String>,
    problem: String,
}

impl CodecError {
    fn into_snapshot_error(self, section: &'static str) -> SnapshotError {
        SnapshotError::new(section, self.field.as_deref().unwrap_or(""), self.problem)
    }
}

impl core::fmt::Display for CodecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.problem)
    }
}

impl ser::StdError for CodecError {}

impl de::Error for CodecError {
    fn custom<M: core::fmt::Display>(msg: M) -> Self {
        CodecError {
            field: None,
            problem: msg.to_string(),
        }
    }
}

impl ser::Error for CodecError {
    fn custom<M: core::fmt::Display>(msg: M) -> Self {
        CodecError {
            field: None,
            problem: msg.to_string(),
        }
    }
}

struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    fn len(&mut self, n: usize) {
        self.out.extend_from_slice(&(n as u64).to_le_bytes());
    }
}

macro_rules! put_le {
    ($($name:ident: $t:ty),*) => {$(
        fn $name(self, v: $t) -> Result<(), CodecError> {
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl ser::Serializer for &mut Encoder {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    put_le!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128, serialize_f32: f32, serialize_f64: f64);

    fn serialize_bool(self, v: bool) -> Result<(), CodecError> {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), CodecError> {
        self.serialize_u32(u32::from(v))
    }
    fn serialize_str(self, v: &str) -> Result<(), CodecError> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CodecError> {
        self.len(v.len());
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), CodecError> {
        self.out.push(0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CodecError> {
        self.out.push(1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CodecError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CodecError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), CodecError> {
        self.serialize_u32(index)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.serialize_u32(index)?;
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, CodecError> {
        match len {
            Some(n) => {
                self.len(n);
                Ok(self)
            }
            None => Err(ser::Error::custom("a sequence of unknown length")),
        }
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self, CodecError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, CodecError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, CodecError> {
        self.serialize_u32(index)?;
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self, CodecError> {
        self.serialize_seq(len)
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, CodecError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, CodecError> {
        self.serialize_u32(index)?;
        Ok(self)
    }
}

macro_rules! compound {
    ($($tr:ident :: $f:ident),*) => {$(
        impl ser::$tr for &mut Encoder {
            type Ok = ();
            type Error = CodecError;
            fn $f<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), CodecError> {
                Ok(())
            }
        }
    )*};
}

compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Encoder {
    type Ok = ();
    type Error = CodecError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CodecError> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CodecError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), CodecError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Encoder {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), CodecError> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Encoder {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), CodecError> {
        Ok(())
    }
}

/// One step of the path to the field being read.
#[derive(Clone, Copy)]
enum Step {
    Field(&'static str),
    Index(usize),
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    path: Vec<Step>,
}

impl<'a> Decoder<'a> {
    fn path_text(&self) -> String {
        let mut s = String::new();
        for step in &self.path {
            match step {
                Step::Field(name) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(name);
                }
                Step::Index(i) => {
                    let _ = write!(s, "[{i}]");
                }
            }
        }
        s
    }

    /// Give an error made without the decoder (serde's `invalid_value` and the like) the
    /// path of the field being read.
    fn locate(&self, mut e: CodecError) -> CodecError {
        if e.field.is_none() {
            e.field = Some(self.path_text());
        }
        e
    }

    fn fail(&self, problem: String) -> CodecError {
        CodecError {
            field: Some(self.path_text()),
            problem,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let left = self.input.len() - self.pos;
        if n > left {
            return Err(self.fail(alloc::format!(
                "truncated: {n} bytes needed, {left} left in the section"
            )));
        }
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A length prefix, refused when the elements (`min_size` bytes each at least) could
    /// not fit in what is left: nothing is reserved on the word of the input alone.
    fn length(&mut self, min_size: usize) -> Result<usize, CodecError> {
        let n = u64::from_le_bytes(self.array()?);
        let left = (self.input.len() - self.pos) as u64;
        if n.saturating_mul(min_size.max(1) as u64) > left {
            return Err(self.fail(alloc::format!(
                "length {n} is more than the {left} bytes left in the section"
            )));
        }
        Ok(n as usize)
    }

    fn tag(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
}

macro_rules! get_le {
    ($($name:ident: $t:ty => $visit:ident),*) => {$(
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
            let v = <$t>::from_le_bytes(self.array()?);
            visitor.$visit(v).map_err(|e| self.locate(e))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, CodecError> {
        Err(self.fail(String::from(
            "the encoding is not self-describing (a state type asked for any value)",
        )))
    }

    get_le!(deserialize_i8: i8 => visit_i8, deserialize_i16: i16 => visit_i16,
        deserialize_i32: i32 => visit_i32, deserialize_i64: i64 => visit_i64,
        deserialize_i128: i128 => visit_i128, deserialize_u8: u8 => visit_u8,
        deserialize_u16: u16 => visit_u16, deserialize_u32: u32 => visit_u32,
        deserialize_u64: u64 => visit_u64, deserialize_u128: u128 => visit_u128,
        deserialize_f32: f32 => visit_f32, deserialize_f64: f64 => visit_f64);

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.tag()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(self.fail(alloc::format!("boolean {b}: expected 0 or 1"))),
        }
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let v = u32::from_le_bytes(self.array()?);
        match char::from_u32(v) {
            Some(c) => visitor.visit_char(c),
            None => Err(self.fail(alloc::format!("{v:#x} is not a character"))),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let n = self.length(1)?;
        let bytes = self.take(n)?;
        match core::str::from_utf8(bytes) {
            Ok(s) => visitor.visit_borrowed_str(s).map_err(|e| self.locate(e)),
            Err(_) => Err(self.fail(String::from("a string that is not UTF-8"))),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let n = self.length(1)?;
        let bytes = self.take(n)?;
        visitor
            .visit_borrowed_bytes(bytes)
            .map_err(|e| self.locate(e))
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.deserialize_bytes(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.tag()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            b => Err(self.fail(alloc::format!(
                "option tag {b}: expected 0 (none) or 1 (some)"
            ))),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let len = self.length(1)?;
        visitor.visit_seq(Elements {
            de: self,
            left: len,
            index: 0,
            fields: &[],
        })
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_seq(Elements {
            de: self,
            left: len,
            index: 0,
            fields: &[],
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let len = self.length(2)?;
        visitor.visit_map(Elements {
            de: self,
            left: len,
            index: 0,
            fields: &[],
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_seq(Elements {
            de: self,
            left: fields.len(),
            index: 0,
            fields,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_enum(self)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.deserialize_u32(visitor)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, CodecError> {
        self.deserialize_any(_visitor)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple, map or struct, each read with its index or field
/// name on the path.
struct Elements<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
    index: usize,
    fields: &'static [&'static str],
}

impl<'de> Elements<'_, 'de> {
    fn element<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, CodecError> {
        let step = match self.fields.get(self.index) {
            Some(name) => Step::Field(name),
            None => Step::Index(self.index),
        };
        self.de.path.push(step);
        let value = seed
            .deserialize(&mut *self.de)
            .map_err(|e| self.de.locate(e))?;
        self.de.path.pop();
        self.index += 1;
        Ok(value)
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = CodecError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, CodecError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.element(seed).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = CodecError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, CodecError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.element(seed).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, CodecError> {
        self.index -= 1;
        self.element(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = CodecError;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), CodecError> {
        let index = u32::from_le_bytes(self.array()?);
        let de: de::value::U32Deserializer<CodecError> = index.into_deserializer();
        let value = seed.deserialize(de).map_err(|e| self.locate(e))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = CodecError;
    fn unit_variant(self) -> Result<(), CodecError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, CodecError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

/// Fixed-size byte arrays longer than serde's 32-element limit (`#[serde(with =
/// "crate::snapshot::codec::byte_array")]`): written as their bytes, no length.
pub mod byte_array {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    /// Write the array.
    pub fn serialize<S: Serializer, const N: usize>(
        value: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(N)?;
        for b in value {
            t.serialize_element(b)?;
        }
        t.end()
    }

    struct ArrayVisitor<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for ArrayVisitor<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "{N} bytes")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut a = [0u8; N];
            for (i, b) in a.iter_mut().enumerate() {
                *b = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(a)
        }
    }

    /// Read the array.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        d.deserialize_tuple(N, ArrayVisitor::<N>)
    }
}
