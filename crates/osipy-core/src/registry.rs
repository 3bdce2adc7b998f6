//! Typed registries: one table per extension point, keyed by the entry type.
//!
//! The crate that owns an extension point defines its entry type (a model
//! builder, a fitter function...) and implements [`Extension`] for it, which
//! names the table (`id`), how to call one entry in messages (`label`) and the
//! config key that selects an entry (`config_key`). [`Registry::register`] and
//! [`Registry::get`] are generic over that type, so a payload can only ever be
//! filed under, and found in, its own table: a kind and its payload type
//! cannot disagree, and there is no run-time downcast a caller could get
//! wrong. Crates add entries with their own `register(&mut Registry)`;
//! `osipy-pipeline` assembles the built-in set, and a library user can add
//! entries of their own the same way.

use crate::{OsipyError, Result};
use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Describes the table of one extension point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// snake_case table id, as used by `osipy list KIND` (e.g. `dce_models`).
    pub id: &'static str,
    /// Singular human-readable name, used in error messages (`DCE model`).
    pub label: &'static str,
    /// The config key whose value selects an entry (e.g. `dce: pipeline.model`).
    pub config_key: &'static str,
}

/// An entry type of an extension point. Implemented by the crate that owns
/// the extension point, once per table.
pub trait Extension: Any + Send + Sync {
    /// The table this type's entries live in.
    const KIND: KindInfo;
}

/// One registered method, as listed: its name and one-line description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// snake_case name, the value a config uses.
    pub name: String,
    /// One-line description with the reference it follows.
    pub description: String,
}

#[derive(Clone)]
struct Table {
    info: KindInfo,
    // Every payload in `entries` has the table's `TypeId` (checked on insert).
    entries: BTreeMap<String, (String, Arc<dyn Any + Send + Sync>)>,
}

/// All registries, one table per [`Extension`] type.
#[derive(Clone, Default)]
pub struct Registry {
    tables: BTreeMap<TypeId, Table>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for t in self.tables.values() {
            m.entry(&t.info.id, &t.entries.keys().collect::<Vec<_>>());
        }
        m.finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `payload` under `name` in the table of `T`. A name already
    /// present in that table, or a second entry type claiming the same table
    /// id, is an error.
    pub fn register<T: Extension>(&mut self, name: &str, description: &str, payload: T) -> Result<()> {
        if let Some(other) = self
            .tables
            .iter()
            .find(|(id, t)| **id != TypeId::of::<T>() && t.info.id == T::KIND.id)
        {
            return Err(OsipyError::DuplicateName {
                kind: "registry table".into(),
                name: other.1.info.id.into(),
            });
        }
        let table = self.tables.entry(TypeId::of::<T>()).or_insert_with(|| Table {
            info: T::KIND,
            entries: BTreeMap::new(),
        });
        if table.entries.contains_key(name) {
            return Err(OsipyError::DuplicateName {
                kind: T::KIND.label.into(),
                name: name.into(),
            });
        }
        table
            .entries
            .insert(name.to_string(), (description.to_string(), Arc::new(payload)));
        Ok(())
    }

    /// The entry `name` of `T`'s table, or an error naming the config key
    /// and listing the valid names.
    pub fn get<T: Extension>(&self, name: &str) -> Result<&T> {
        let found = self
            .tables
            .get(&TypeId::of::<T>())
            .and_then(|t| t.entries.get(name))
            .and_then(|(_, p)| p.downcast_ref::<T>());
        found.ok_or_else(|| OsipyError::UnknownName {
            kind: format!("{} ({})", T::KIND.label, T::KIND.config_key),
            name: name.into(),
            valid: self.names::<T>(),
        })
    }

    /// The names in `T`'s table, sorted.
    pub fn names<T: Extension>(&self) -> Vec<String> {
        self.tables
            .get(&TypeId::of::<T>())
            .map(|t| t.entries.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every non-empty table, sorted by id, with its entries sorted by name.
    pub fn tables(&self) -> Vec<(KindInfo, Vec<Listing>)> {
        let mut v: Vec<(KindInfo, Vec<Listing>)> = self
            .tables
            .values()
            .filter(|t| !t.entries.is_empty())
            .map(|t| {
                let entries = t
                    .entries
                    .iter()
                    .map(|(name, (description, _))| Listing {
                        name: name.clone(),
                        description: description.clone(),
                    })
                    .collect();
                (t.info, entries)
            })
            .collect();
        v.sort_by_key(|(info, _)| info.id);
        v
    }

    /// The table with id `id`, or an error listing the ids.
    pub fn table(&self, id: &str) -> Result<(KindInfo, Vec<Listing>)> {
        let all = self.tables();
        let ids: Vec<String> = all.iter().map(|(i, _)| i.id.to_string()).collect();
        all.into_iter()
            .find(|(i, _)| i.id == id)
            .ok_or_else(|| OsipyError::UnknownName {
                kind: "registry kind".into(),
                name: id.into(),
                valid: ids,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Double(fn(f64) -> f64);
    impl Extension for Double {
        const KIND: KindInfo = KindInfo {
            id: "doublers",
            label: "doubler",
            config_key: "test.doubler",
        };
    }
    struct Other;
    impl Extension for Other {
        const KIND: KindInfo = KindInfo {
            id: "others",
            label: "other",
            config_key: "test.other",
        };
    }
    struct Impostor;
    impl Extension for Impostor {
        const KIND: KindInfo = Double::KIND;
    }

    #[test]
    fn register_get_list_and_errors() {
        let mut reg = Registry::new();
        reg.register("tofts", "Tofts 1991", Double(|x| x * 2.0)).unwrap();
        reg.register("patlak", "Patlak 1983", Double(|x| x + 1.0))
            .unwrap();
        assert_eq!(reg.names::<Double>(), ["patlak", "tofts"]);
        assert_eq!((reg.get::<Double>("tofts").unwrap().0)(2.0), 4.0);

        let dup = reg
            .register("tofts", "again", Double(|x| x))
            .unwrap_err()
            .to_string();
        assert!(dup.contains("doubler \"tofts\" is already registered"), "{dup}");
        let unknown = reg.get::<Double>("toftz").unwrap_err().to_string();
        assert!(
            unknown.contains("\"toftz\"")
                && unknown.contains("patlak, tofts")
                && unknown.contains("test.doubler"),
            "{unknown}"
        );
        // Tables are separate: the same name in another table is another entry.
        assert!(reg.get::<Other>("tofts").is_err());
        reg.register("tofts", "other kind", Other).unwrap();
        // A second type cannot claim an existing table id.
        let e = reg.register("x", "impostor", Impostor).unwrap_err().to_string();
        assert!(e.contains("doublers"), "{e}");
        let tables = reg.tables();
        assert_eq!(
            tables.iter().map(|(i, _)| i.id).collect::<Vec<_>>(),
            ["doublers", "others"]
        );
        assert_eq!(reg.table("others").unwrap().1[0].name, "tofts");
        assert!(reg
            .table("models")
            .unwrap_err()
            .to_string()
            .contains("doublers, others"));
    }
}
