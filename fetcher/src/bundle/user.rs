//! The image's `User` resolved to ids the way runc's libcontainer
//! (`user.GetExecUser`, which `umoci unpack` calls with the image's
//! `/etc/passwd` and `/etc/group`) resolves it.
//!
//! - `USER[:GROUP]`; a third `:` field and later ones are ignored.
//! - An empty USER is uid 0 (looked up in passwd to find its home and groups).
//! - A numeric USER is always a uid (looked up in passwd, but it need not be
//!   there); a name must be in passwd. The first matching line wins.
//! - A GROUP given explicitly sets the gid (a number need not be in
//!   `/etc/group`, a name must) and there are no supplementary groups;
//!   without GROUP the gid is the passwd entry's and the supplementary groups
//!   are those whose member list names the user.
//! - HOME is the passwd entry's home directory, when the user was found there.
//! - A missing passwd or group file reads as no entries at all (numeric specs
//!   still work).

use super::BundleError;

/// The largest uid or gid accepted (libcontainer's `maxID`, 2^31 - 1).
const MAX_ID: i64 = (1 << 31) - 1;

/// What the process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in `/etc/group` order.
    pub additional_gids: Vec<u32>,
    /// The passwd entry's home directory, when the user was found there.
    pub home: Option<String>,
}

/// One `/etc/passwd` line: `name:password:uid:gid:gecos:home:shell`.
struct PasswdLine {
    name: String,
    uid: i64,
    gid: i64,
    home: String,
}

/// One `/etc/group` line: `name:password:gid:member,member…`.
struct GroupLine {
    name: String,
    gid: i64,
    members: Vec<String>,
}

/// The `:`-separated fields of a trimmed line, missing ones empty.
fn fields(line: &str) -> Vec<&str> {
    line.split(':').collect()
}

/// Go's `strconv.Atoi` as libcontainer uses it: anything that is not a
/// decimal integer counts as 0 in a file (`parseLine` ignores the error).
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn lines(text: &[u8]) -> impl Iterator<Item = String> + '_ {
    text.split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .filter(|l| !l.is_empty())
}

fn parse_passwd(text: &[u8]) -> Vec<PasswdLine> {
    lines(text)
        .map(|l| {
            let f = fields(&l);
            let get = |i: usize| f.get(i).copied().unwrap_or_default();
            PasswdLine {
                name: get(0).to_owned(),
                uid: atoi(get(2)).unwrap_or(0),
                gid: atoi(get(3)).unwrap_or(0),
                home: get(5).to_owned(),
            }
        })
        .collect()
}

fn parse_group(text: &[u8]) -> Vec<GroupLine> {
    lines(text)
        .map(|l| {
            let f = fields(&l);
            let get = |i: usize| f.get(i).copied().unwrap_or_default();
            GroupLine {
                name: get(0).to_owned(),
                gid: atoi(get(2)).unwrap_or(0),
                members: get(3).split(',').map(str::to_owned).collect(),
            }
        })
        .collect()
}

fn id(spec: &str, n: i64) -> Result<u32, BundleError> {
    if !(0..=MAX_ID).contains(&n) {
        return Err(BundleError::User {
            user: spec.to_owned(),
            reason: format!("{n} is outside the range of ids (0 to {MAX_ID})"),
        });
    }
    Ok(n as u32)
}

/// Resolves `spec` (the image config's `User`, empty when absent) against
/// the image's `/etc/passwd` and `/etc/group` (`None`: the file is not in
/// the image).
pub fn resolve_user(
    spec: &str,
    passwd: Option<&[u8]>,
    group: Option<&[u8]>,
) -> Result<ExecUser, BundleError> {
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or_default();
    let group_arg = parts.next().unwrap_or_default();
    let uid_arg = atoi(user_arg);
    let gid_arg = atoi(group_arg);
    let err = |reason: String| BundleError::User {
        user: spec.to_owned(),
        reason,
    };

    let mut out = ExecUser::default();
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let found = users.iter().find(|u| {
        if user_arg.is_empty() {
            u.uid == 0
        } else if let Some(n) = uid_arg {
            u.uid == n
        } else {
            u.name == user_arg
        }
    });
    let mut matched_name = None;
    match found {
        Some(u) => {
            matched_name = Some(u.name.as_str());
            out.uid = id(spec, u.uid)?;
            out.gid = id(spec, u.gid)?;
            out.home = Some(u.home.clone()).filter(|h| !h.is_empty());
        }
        None if !user_arg.is_empty() => match uid_arg {
            Some(n) => out.uid = id(spec, n)?,
            None => {
                return Err(err(format!(
                    "no user {user_arg:?} in the image's /etc/passwd{}",
                    if passwd.is_none() {
                        " (the image has none)"
                    } else {
                        ""
                    }
                )))
            }
        },
        None => {}
    }

    if group_arg.is_empty() && matched_name.is_none() {
        return Ok(out);
    }
    let groups = group.map(parse_group).unwrap_or_default();
    if !group_arg.is_empty() {
        let explicit = groups.iter().find(|g| match gid_arg {
            Some(n) => g.gid == n,
            None => g.name == group_arg,
        });
        out.gid = match (explicit, gid_arg) {
            (Some(g), _) => id(spec, g.gid)?,
            (None, Some(n)) => id(spec, n)?,
            (None, None) => {
                return Err(err(format!(
                    "no group {group_arg:?} in the image's /etc/group{}",
                    if group.is_none() {
                        " (the image has none)"
                    } else {
                        ""
                    }
                )))
            }
        };
    } else if let Some(name) = matched_name {
        out.additional_gids = groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name))
            .map(|g| id(spec, g.gid))
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
        app:x:1000:1000:app:/home/app:/bin/sh\n\
        \n  dup:x:1000:7:second:/dup:/bin/sh  \n";
    const GROUP: &[u8] = b"root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nmore:x:3000:app\n";

    fn r(spec: &str) -> Result<ExecUser, BundleError> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_its_home() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_deref()), (0, 0, Some("/root")));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn a_name_gives_its_ids_home_and_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!(
            u,
            ExecUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![2000, 3000],
                home: Some("/home/app".into())
            }
        );
        // A uid is looked up too: the first line with it wins.
        assert_eq!(r("1000").unwrap(), u);
    }

    #[test]
    fn an_explicit_group_sets_the_gid_and_drops_supplementary_groups() {
        let u = r("app:extra").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        assert!(u.additional_gids.is_empty());
        assert_eq!(u.home.as_deref(), Some("/home/app"));
        assert_eq!(r("app:4242").unwrap().gid, 4242);
        assert!(matches!(r("app:nogroup"), Err(BundleError::User { .. })));
    }

    #[test]
    fn unknown_numeric_ids_are_taken_as_they_are_without_home() {
        let u = r("1234:2345").unwrap();
        assert_eq!(
            u,
            ExecUser {
                uid: 1234,
                gid: 2345,
                ..Default::default()
            }
        );
        // Without any passwd or group file, numbers still work.
        let u = resolve_user("5:6", None, None).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (5, 6, None));
        assert_eq!(resolve_user("", None, None).unwrap(), ExecUser::default());
    }

    #[test]
    fn unknown_names_and_out_of_range_ids_are_refused() {
        assert!(matches!(r("nobody"), Err(BundleError::User { .. })));
        assert!(matches!(
            resolve_user("app", None, None),
            Err(BundleError::User { .. })
        ));
        assert!(matches!(r("-1"), Err(BundleError::User { .. })));
        assert!(matches!(r("2147483648"), Err(BundleError::User { .. })));
        assert_eq!(r("2147483647").unwrap().uid, 2147483647);
    }
}
