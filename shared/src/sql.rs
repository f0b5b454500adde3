//! Diesel column mappings for the shared enums the control plane's store keeps in text
//! columns (`sql` feature only). A mapping reads and writes the same names as the API and
//! the key format: it adds no way to parse anything.

/// Stores an enum in a text column as its stable name, on every backend: rows then carry the
/// enum, and a name no variant has fails the read rather than reaching the domain. The type
/// derives `AsExpression` and `FromSqlRow` with `sql_type = Text`; `$parse` is
/// `fn(&str) -> Option<Self>` and `$name` is `fn(Self) -> &'static str`. Only with the `sql`
/// feature (the control plane's store); the Worker builds without diesel.
#[macro_export]
macro_rules! text_column {
    ($t:ty, $parse:expr, $name:path) => {
        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $t
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let s = <String as diesel::deserialize::FromSql<diesel::sql_types::Text, DB>>::from_sql(bytes)?;
                $parse(&s).ok_or_else(|| {
                    format!("{s:?} is not a stored {}", stringify!($t)).into()
                })
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $t
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                $name(*self).to_sql(out)
            }
        }
    };
}

text_column!(crate::Kind, |s: &str| s.parse().ok(), crate::Kind::as_str);
text_column!(
    crate::Environment,
    |s: &str| s.parse().ok(),
    crate::Environment::as_str
);
