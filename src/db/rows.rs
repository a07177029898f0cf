//! Rows to insert, as one array parameter per column: `INSERT INTO t (a, b) SELECT * FROM
//! UNNEST($1::uuid[], $2::text[])`, whatever the number of rows.
//!
//! Built once, such rows are either inserted by a statement of their own
//! ([`Rows::insert`]) or carried by another statement as one of its data-modifying `WITH`
//! parts ([`Rows::cte`] and [`Rows::bind`]): that is how the ledger's posting statement
//! writes a charge batch's rows and its idempotency keys in the same round trip as its
//! own.
//!
//! Invariant: a [`Rows`] has exactly one array per column, in the column list's order,
//! and every array has one element per row.

use std::fmt::Write as _;

use sqlx::error::BoxDynError;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, Encode, PgConnection, Postgres, Type};

type Bind<'a> = Box<dyn FnOnce(&mut PgArguments) -> Result<(), BoxDynError> + Send + 'a>;

pub struct Rows<'a> {
    /// `INSERT INTO table (columns…)`.
    insert: &'static str,
    /// Each column's element type, in order.
    types: Vec<&'static str>,
    binds: Vec<Bind<'a>>,
    len: usize,
}

impl<'a> Rows<'a> {
    /// `insert` is `INSERT INTO table (columns…)`; `len` rows follow, as [`Rows::column`]s.
    pub fn new(insert: &'static str, len: usize) -> Rows<'a> {
        Rows { insert, types: Vec::new(), binds: Vec::new(), len }
    }

    /// The next column: its element type (`uuid`, `numeric`, …) and its values, one per row.
    pub fn column<T>(mut self, element: &'static str, values: Vec<T>) -> Rows<'a>
    where
        Vec<T>: Encode<'a, Postgres> + Type<Postgres>,
        T: Send + 'a,
    {
        debug_assert_eq!(values.len(), self.len, "one value per row in every column");
        self.types.push(element);
        self.binds.push(Box::new(move |args: &mut PgArguments| <PgArguments as Arguments<'a>>::add(args, values)));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many parameters [`Rows::cte`] takes.
    pub fn width(&self) -> usize {
        self.types.len()
    }

    /// The insert, its arrays numbered from `$first`.
    pub fn cte(&self, first: usize) -> String {
        let mut sql = format!("{} SELECT * FROM UNNEST(", self.insert);
        for (i, t) in self.types.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}::{t}[]", first + i);
        }
        sql.push(')');
        sql
    }

    /// Adds the arrays, in column order, after the parameters already in `args`.
    pub fn bind(self, args: &mut PgArguments) -> Result<(), BoxDynError> {
        self.binds.into_iter().try_for_each(|b| b(args))
    }

    /// Inserts the rows by a statement of their own (none when there are no rows).
    pub async fn insert(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.is_empty() {
            return Ok(());
        }
        let sql = self.cte(1);
        let mut args = PgArguments::default();
        self.bind(&mut args).map_err(sqlx::Error::Encode)?;
        sqlx::query_with(&sql, args).execute(conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_each_column_from_the_first_parameter() {
        let rows = Rows::new("INSERT INTO t (a, b)", 2)
            .column("uuid", vec![uuid::Uuid::nil(); 2])
            .column("text", vec!["x", "y"]);
        assert_eq!(rows.width(), 2);
        assert_eq!(rows.cte(21), "INSERT INTO t (a, b) SELECT * FROM UNNEST($21::uuid[], $22::text[])");
    }
}
