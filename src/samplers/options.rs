//! Method settings: each method file declares the settings it reads as
//! [`OptionSpec`]s (name, help, kind, default, range check); the registry
//! ([`super::Method::options`], [`super::option_specs`]) collects them, the
//! command line builds one flag per spec (`--<name>`), and [`MethodOptions`]
//! holds the values a run was given. A setting two methods share (CG's
//! tolerance and cap) is one spec both list.

use std::collections::BTreeMap;

use super::SamplerError;

/// What values a setting takes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A real number (f32).
    Number,
    /// A non-negative integer.
    Count,
    /// One of these names (with a line of help each).
    Choice(&'static [Choice]),
}

/// One value of a [`Kind::Choice`] setting.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    pub name: &'static str,
    pub help: &'static str,
}

/// One setting of a method.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// The name, as the flag spells it without its dashes (`cg-tol`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The value when none is given; None when the method picks one from
    /// the run (DMPS's lambda from the process, SMC's particles from the
    /// batch) or the caller does (DPS's zeta from the task).
    pub default: Option<&'static str>,
    /// The range check: Err is the one-line message.
    pub check: fn(Value) -> Result<(), String>,
}

/// A setting's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Number(f32),
    Count(usize),
    Choice(&'static str),
}

impl OptionSpec {
    /// `text` read as this setting's value (its range is checked by
    /// [`MethodOptions::validate`], when a sampler is planned).
    pub fn parse(&self, text: &str) -> Result<Value, SamplerError> {
        let bad = |why: &str| SamplerError::Invalid(format!("--{} {text}: {why}", self.name));
        let value = match self.kind {
            Kind::Number => Value::Number(text.trim().parse().map_err(|_| bad("not a number"))?),
            Kind::Count => Value::Count(text.trim().parse().map_err(|_| bad("not a whole number"))?),
            Kind::Choice(choices) => {
                Value::Choice(choices.iter().find(|c| c.name == text).map(|c| c.name).ok_or_else(|| {
                    let names: Vec<&str> = choices.iter().map(|c| c.name).collect();
                    bad(&format!("expected one of {}", names.join(", ")))
                })?)
            }
        };
        Ok(value)
    }
}

/// No range beyond the kind's.
pub fn any(_: Value) -> Result<(), String> {
    Ok(())
}

/// The settings a run was given, by name; a setting not given reads as its
/// spec's default. Values are checked against their specs' ranges by
/// [`MethodOptions::validate`] ([`super::Sampler::new`] calls it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodOptions {
    values: BTreeMap<&'static str, Value>,
}

impl MethodOptions {
    /// Sets setting `name` (any method's) from `text`; one line naming the
    /// flag when the name is unknown or the text not of the setting's kind.
    pub fn set(&mut self, name: &str, text: &str) -> Result<(), SamplerError> {
        let spec = super::option_specs()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SamplerError::Invalid(format!("no sampler takes a setting --{name}")))?;
        let value = spec.parse(text)?;
        self.values.insert(spec.name, value);
        Ok(())
    }

    /// As [`MethodOptions::set`], by value: for callers holding a number.
    pub fn with(mut self, name: &str, value: impl ToString) -> Result<MethodOptions, SamplerError> {
        self.set(name, &value.to_string())?;
        Ok(self)
    }

    /// Checks every value given against its spec's range: the first one out
    /// of range, in the registry's order, as one line.
    pub fn validate(&self) -> Result<(), SamplerError> {
        for spec in super::option_specs() {
            if let Some(v) = self.values.get(spec.name) {
                (spec.check)(*v).map_err(SamplerError::Invalid)?;
            }
        }
        Ok(())
    }

    /// Whether `name` was given (not only defaulted).
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The names of the settings given (not those only defaulted).
    pub fn given(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.keys().copied()
    }

    fn get(&self, name: &str) -> Option<Value> {
        if let Some(v) = self.values.get(name) {
            return Some(*v);
        }
        let spec = super::option_specs().into_iter().find(|s| s.name == name);
        debug_assert!(spec.is_some(), "no method declares a setting {name}");
        let default = spec?.default?;
        Some(spec?.parse(default).expect("a spec's default is of its kind"))
    }

    /// A [`Kind::Number`] setting: given, or its default (None without one).
    pub fn number(&self, name: &str) -> Option<f32> {
        match self.get(name)? {
            Value::Number(v) => Some(v),
            other => panic!("setting {name} is {other:?}, not a number"),
        }
    }

    /// A [`Kind::Count`] setting: given, or its default (None without one).
    pub fn count(&self, name: &str) -> Option<usize> {
        match self.get(name)? {
            Value::Count(v) => Some(v),
            other => panic!("setting {name} is {other:?}, not a count"),
        }
    }

    /// A [`Kind::Choice`] setting (every choice setting has a default).
    pub fn choice(&self, name: &str) -> &'static str {
        match self.get(name) {
            Some(Value::Choice(v)) => v,
            other => panic!("setting {name} is {other:?}, not a choice"),
        }
    }
}

/// A fieldless enum whose values are the [`Choice`]s of one setting: the
/// `CHOICES` table, `from_choice`, `name` and each variant's doc come from
/// one list of `Variant => "name", "help"` lines.
macro_rules! choice_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident => $text:literal, $help:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $(#[doc = $help] $variant,)+
        }

        impl $name {
            /// The setting's values, as the command line spells them.
            pub const CHOICES: &'static [$crate::samplers::options::Choice] = &[
                $($crate::samplers::options::Choice { name: $text, help: $help },)+
            ];

            /// The value named `name` (one of [`Self::CHOICES`]).
            pub fn from_choice(name: &str) -> Option<$name> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The value's name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}
pub(crate) use choice_enum;
