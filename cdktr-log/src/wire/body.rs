//! Reading a body: by hand rather than derived, because serde's derive reads
//! a struct from an array, and a field name or a `&str` from `bin`, where
//! the format says map and `str`.

use serde::Deserialize;

/// A body's fields as found. Every field optional so that the version is
/// checked before anything else and a missing field gets a precise error.
#[derive(Default)]
pub(super) struct BodyIn<'a> {
    pub v: Option<u64>,
    pub publisher_id: Option<&'a str>,
    pub seq: Option<u64>,
    pub workflow_id: Option<&'a str>,
    pub workflow_name: Option<&'a str>,
    pub workflow_instance_id: Option<&'a str>,
    pub task_name: Option<&'a str>,
    pub task_instance_id: Option<&'a str>,
    pub timestamp_ms: Option<i64>,
    pub level: Option<&'a str>,
    pub payload: Option<&'a str>,
    pub replays: Option<bool>,
}

/// A MessagePack `str`, borrowed; `bin` is refused.
struct Str<'a>(&'a str);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a MessagePack str")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Str<'de>, E> {
                Ok(Str(v))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for BodyIn<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BodyIn<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a MessagePack map with str keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<BodyIn<'de>, A::Error> {
                fn put<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
                    map: &mut A,
                    slot: &mut Option<T>,
                    key: &str,
                ) -> std::result::Result<(), A::Error> {
                    if slot.is_some() {
                        return Err(serde::de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = Some(map.next_value()?);
                    Ok(())
                }
                fn put_str<'de, A: serde::de::MapAccess<'de>>(
                    map: &mut A,
                    slot: &mut Option<&'de str>,
                    key: &str,
                ) -> std::result::Result<(), A::Error> {
                    if slot.is_some() {
                        return Err(serde::de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = Some(map.next_value::<Str<'de>>()?.0);
                    Ok(())
                }
                let mut b = BodyIn::default();
                while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                    match key {
                        "v" => put(&mut map, &mut b.v, key)?,
                        "seq" => put(&mut map, &mut b.seq, key)?,
                        "timestamp_ms" => put(&mut map, &mut b.timestamp_ms, key)?,
                        "replays" => put(&mut map, &mut b.replays, key)?,
                        "publisher_id" => put_str(&mut map, &mut b.publisher_id, key)?,
                        "workflow_id" => put_str(&mut map, &mut b.workflow_id, key)?,
                        "workflow_name" => put_str(&mut map, &mut b.workflow_name, key)?,
                        "workflow_instance_id" => put_str(&mut map, &mut b.workflow_instance_id, key)?,
                        "task_name" => put_str(&mut map, &mut b.task_name, key)?,
                        "task_instance_id" => put_str(&mut map, &mut b.task_instance_id, key)?,
                        "level" => put_str(&mut map, &mut b.level, key)?,
                        "payload" => put_str(&mut map, &mut b.payload, key)?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(b)
            }
        }
        d.deserialize_map(V)
    }
}
