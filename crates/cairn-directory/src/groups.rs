use cairn_domain::{FieldError, Group, User};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::load::load_user;
use crate::{Ctx, Directory};

/// A validated JumpCloud `UserGroupPost` / `UserGroupPut` body.
#[derive(Debug, Default)]
pub struct GroupInput {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub attributes: Option<Option<Value>>,
    pub membership_method: Option<Option<String>>,
}

impl GroupInput {
    pub fn parse(body: &Value, creating: bool) -> Result<GroupInput> {
        let Some(obj) = body.as_object() else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        let mut g = GroupInput::default();
        let mut errors = Vec::new();
        let opt_text = |k: &str, v: &Value, max: usize, errors: &mut Vec<FieldError>| -> Option<Option<String>> {
            match v {
                Value::Null => Some(None),
                Value::String(s) if s.chars().count() <= max => Some(Some(s.clone())),
                Value::String(_) => {
                    errors.push(FieldError::new(k, format!("must be at most {max} characters")));
                    None
                }
                _ => {
                    errors.push(FieldError::new(k, "must be a string"));
                    None
                }
            }
        };
        for (k, v) in obj {
            match k.as_str() {
                "name" => match v.as_str().map(str::trim) {
                    Some(n) if !n.is_empty() && n.chars().count() <= 255 => g.name = Some(n.to_string()),
                    Some(_) => errors.push(FieldError::new("name", "must be 1 to 255 characters")),
                    None => errors.push(FieldError::new("name", "must be a string")),
                },
                "description" => g.description = opt_text(k, v, 1024, &mut errors),
                "email" => g.email = opt_text(k, v, 1024, &mut errors),
                "membershipMethod" => match v.as_str() {
                    Some("NOTSET" | "STATIC") | None if !v.is_string() || v.as_str().is_some() => {
                        g.membership_method = Some(v.as_str().map(String::from))
                    }
                    _ => errors.push(FieldError::new(k, "Cairn supports NOTSET and STATIC membership")),
                },
                "attributes" => match v {
                    Value::Object(_) | Value::Null => g.attributes = Some((!v.is_null()).then(|| v.clone())),
                    _ => errors.push(FieldError::new(k, "must be an object")),
                },
                // Read-only fields a client may echo back from a GET.
                "id" | "type" => {}
                other => {
                    errors.push(FieldError::new(other, "is not a field of a user group (JumpCloud UserGroupPost)"))
                }
            }
        }
        if creating && g.name.is_none() && !errors.iter().any(|e| e.field == "name") {
            errors.push(FieldError::new("name", "is required"));
        }
        if errors.is_empty() {
            Ok(g)
        } else {
            Err(Error::Invalid(errors))
        }
    }
}

/// The JumpCloud `UserGroup` JSON.
pub fn group_json(g: &Group) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), g.id.clone().into());
    m.insert("name".into(), g.name.clone().into());
    m.insert("type".into(), "user_group".into());
    m.insert("description".into(), g.description.clone().unwrap_or_default().into());
    m.insert("email".into(), g.email.clone().unwrap_or_default().into());
    m.insert("membershipMethod".into(), g.membership_method.clone().unwrap_or_else(|| "STATIC".into()).into());
    m.insert("attributes".into(), g.attributes.clone().unwrap_or(Value::Null));
    Value::Object(m)
}

fn gid_of(attributes: &Option<Value>) -> Option<i64> {
    attributes.as_ref()?.get("posixGroups")?.get(0)?.get("id")?.as_i64()
}

impl Directory {
    pub async fn create_group(&self, ctx: &Ctx, body: &Value) -> Result<Group> {
        let mut tx = self.store().begin().await?;
        let g = self.create_group_in(&mut tx.db(), ctx, body).await?;
        tx.commit().await?;
        Ok(g)
    }

    /// `create_group` in the caller's transaction.
    pub(crate) async fn create_group_in(&self, db: &mut cairn_store::Db<'_>, ctx: &Ctx, body: &Value) -> Result<Group> {
        let input = GroupInput::parse(body, true)?;
        let now = self.now();
        let attributes = input.attributes.flatten();
        let g = Group {
            id: self.new_id(),
            name: input.name.unwrap_or_default(),
            description: input.description.flatten(),
            email: input.email.flatten(),
            unix_gid: gid_of(&attributes),
            attributes,
            membership_method: input.membership_method.flatten(),
            created: now,
            updated: now,
        };
        if db.group_by_name(&g.name).await?.is_some() {
            return Err(Error::Conflict(format!("a group named '{}' already exists", g.name)));
        }
        db.insert_group(&g).await?;
        let ev = self.event(ctx, "group_create", Some(("group", &g.id, &g.name)), vec![], group_json(&g));
        db.insert_event(&ev).await?;
        Ok(g)
    }

    pub async fn update_group(&self, ctx: &Ctx, id: &str, body: &Value) -> Result<Group> {
        let mut tx = self.store().begin().await?;
        let g = self.update_group_in(&mut tx.db(), ctx, id, body).await?;
        tx.commit().await?;
        Ok(g)
    }

    /// `update_group` in the caller's transaction.
    pub(crate) async fn update_group_in(
        &self,
        db: &mut cairn_store::Db<'_>,
        ctx: &Ctx,
        id: &str,
        body: &Value,
    ) -> Result<Group> {
        let input = GroupInput::parse(body, false)?;
        let old = load_group(db, id).await?;
        let mut g = old.clone();
        if let Some(n) = input.name {
            if n.to_lowercase() != old.name.to_lowercase() && db.group_by_name(&n).await?.is_some() {
                return Err(Error::Conflict(format!("a group named '{n}' already exists")));
            }
            g.name = n;
        }
        if let Some(d) = input.description {
            g.description = d;
        }
        if let Some(e) = input.email {
            g.email = e;
        }
        if let Some(a) = input.attributes {
            g.attributes = a;
            g.unix_gid = gid_of(&g.attributes);
        }
        if let Some(m) = input.membership_method {
            g.membership_method = m;
        }
        let changes = crate::json_changes("group", &group_json(&old), &group_json(&g));
        if changes.is_empty() {
            return Ok(old);
        }
        g.updated = self.now();
        db.update_group(&g).await?;
        let ev = self.event(ctx, "group_update", Some(("group", &g.id, &g.name)), changes, json!({}));
        db.insert_event(&ev).await?;
        Ok(g)
    }

    pub async fn delete_group(&self, ctx: &Ctx, id: &str) -> Result<Group> {
        let mut tx = self.store().begin().await?;
        let g = load_group(&mut tx.db(), id).await?;
        tx.db().delete_group(id).await?;
        let revoked = self.revoke_ungranted(&mut tx.db(), None, None).await?;
        let mut detail = group_json(&g);
        if !revoked.is_empty() {
            detail["revoked_application_access"] = json!(revoked);
        }
        let ev = self.event(ctx, "group_delete", Some(("group", &g.id, &g.name)), vec![], detail);
        tx.db().insert_event(&ev).await?;
        tx.commit().await?;
        Ok(g)
    }

    pub async fn get_group(&self, id: &str) -> Result<Group> {
        let mut c = self.store().read().await?;
        load_group(&mut c.db(), id).await
    }

    pub async fn list_groups(&self, name: Option<&str>, limit: i64, skip: i64) -> Result<(i64, Vec<Group>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().list_groups(name, limit, skip).await?)
    }

    /// A page of groups by a JumpCloud v2 list query (filters and sort).
    pub async fn query_groups(
        &self,
        q: &cairn_domain::group_query::GroupQuery,
        limit: i64,
        skip: i64,
    ) -> Result<(i64, Vec<Group>)> {
        let mut c = self.store().read().await?;
        Ok(c.db().query_groups(q, limit, skip).await?)
    }

    /// Adds or removes one user; returns whether membership changed. Repeating an add or a
    /// remove is not an error.
    pub async fn change_membership(&self, ctx: &Ctx, group_id: &str, user_id: &str, add: bool) -> Result<bool> {
        let mut tx = self.store().begin().await?;
        let changed = self.change_membership_in(&mut tx.db(), ctx, group_id, user_id, add).await?;
        if changed {
            tx.commit().await?;
        }
        Ok(changed)
    }

    /// `change_membership` in the caller's transaction.
    pub(crate) async fn change_membership_in(
        &self,
        db: &mut cairn_store::Db<'_>,
        ctx: &Ctx,
        group_id: &str,
        user_id: &str,
        add: bool,
    ) -> Result<bool> {
        let g = load_group(db, group_id).await?;
        let u = load_user(db, user_id).await?;
        let changed =
            if add { db.add_member(&g.id, &u.id, self.now()).await? } else { db.remove_member(&g.id, &u.id).await? };
        if changed {
            let action = if add { "group_member_add" } else { "group_member_remove" };
            let mut detail = json!({ "group_id": g.id, "group_name": g.name });
            // Leaving a group may take an application away: its tokens end with it.
            if !add && !self.revoke_ungranted(db, Some(&u.id), None).await?.is_empty() {
                detail["revoked_application_access"] = json!(true);
            }
            let ev = self.event(ctx, action, Some(("user", &u.id, &u.username)), vec![], detail);
            db.insert_event(&ev).await?;
        }
        Ok(changed)
    }

    pub async fn group_members(&self, group_id: &str, limit: i64, skip: i64) -> Result<(i64, Vec<String>)> {
        let mut c = self.store().read().await?;
        load_group(&mut c.db(), group_id).await?;
        Ok(c.db().group_members(group_id, limit, skip).await?)
    }

    pub async fn groups_of_user(&self, user_id: &str) -> Result<(User, Vec<Group>)> {
        let mut c = self.store().read().await?;
        let u = crate::load::read_user(&mut c.db(), user_id).await?;
        let groups = c.db().groups_of_user(user_id).await?;
        Ok((u, groups))
    }
}

pub(crate) async fn load_group(db: &mut cairn_store::Db<'_>, id: &str) -> Result<Group> {
    if !cairn_domain::id::is_object_id(id) {
        return Err(Error::NotFound(format!("no group with id '{id}'")));
    }
    db.get_group(id).await?.ok_or_else(|| Error::NotFound(format!("no group with id '{id}'")))
}
