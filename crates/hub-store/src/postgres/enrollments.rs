//! Group enrollments on PostgreSQL.

use tokio_postgres::Row;

use hub_core::{Error, GroupPath, Result, Timestamp};

use super::{PostgresStore, below_pattern, col, corrupt, execute, query, query_opt, ts};
use crate::credentials::EnrollmentRecord;
use crate::validate;

const COLS: &str = "id, group_path, hash, max_uses, uses, expires_at, created_at";

fn from_row(row: &Row) -> Result<EnrollmentRecord> {
    Ok(EnrollmentRecord {
        id: col(row, "id")?,
        group: col::<&str>(row, "group_path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        hash: col(row, "hash")?,
        max_uses: u32::try_from(col::<i64>(row, "max_uses")?)
            .map_err(|_| corrupt("enrollment max_uses"))?,
        uses: u32::try_from(col::<i64>(row, "uses")?).map_err(|_| corrupt("enrollment uses"))?,
        expires_at: ts(col(row, "expires_at")?)?,
        created_at: ts(col(row, "created_at")?)?,
    })
}

impl PostgresStore {
    pub(super) async fn cred_put_enrollment(&self, e: EnrollmentRecord) -> Result<()> {
        validate::token(&e.id, validate::MAX_HASH, "the enrollment id")?;
        validate::token(&e.hash, validate::MAX_HASH, "the enrollment hash")?;
        let c = self.client().await?;
        let n = execute(
            &c,
            &format!(
                "INSERT INTO enrollments ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT DO NOTHING"
            ),
            &[
                &e.id,
                &e.group.as_str(),
                &e.hash,
                &i64::from(e.max_uses),
                &i64::from(e.uses),
                &e.expires_at.as_millis(),
                &e.created_at.as_millis(),
            ],
        )
        .await?;
        if n == 0 {
            return Err(Error::conflict("an enrollment with this id exists"));
        }
        Ok(())
    }

    pub(super) async fn cred_get_enrollment(&self, id: &str) -> Result<Option<EnrollmentRecord>> {
        let c = self.client().await?;
        query_opt(
            &c,
            &format!("SELECT {COLS} FROM enrollments WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }

    pub(super) async fn cred_list_enrollments(
        &self,
        root: &GroupPath,
    ) -> Result<Vec<EnrollmentRecord>> {
        let c = self.client().await?;
        let rows = query(
            &c,
            &format!(
                "SELECT {COLS} FROM enrollments WHERE group_path = $1 OR group_path LIKE $2 \
                 ORDER BY id"
            ),
            &[&root.as_str(), &below_pattern(root)],
        )
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub(super) async fn cred_delete_enrollment(&self, id: &str) -> Result<()> {
        let c = self.client().await?;
        let n = execute(&c, "DELETE FROM enrollments WHERE id = $1", &[&id]).await?;
        if n == 0 {
            return Err(Error::not_found("no such enrollment"));
        }
        Ok(())
    }

    pub(super) async fn cred_use_enrollment(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<EnrollmentRecord>> {
        let c = self.client().await?;
        // One statement: the row lock makes a concurrent use wait and re-check the condition.
        query_opt(
            &c,
            &format!(
                "UPDATE enrollments SET uses = uses + 1 \
                 WHERE id = $1 AND uses < max_uses AND expires_at > $2 RETURNING {COLS}"
            ),
            &[&id, &now.as_millis()],
        )
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
    }
}
