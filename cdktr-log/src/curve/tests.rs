use super::*;

const PUBLIC: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
const SECRET: &str = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";

#[test]
fn a_certificate_reads_its_keys_name_and_role() {
    let text = format!(
        "#   ZeroMQ CURVE **Secret** Certificate\n\nmetadata\n    name = \"agent-7\"\n    role = \"publisher\"\n    \
         team = \"etl\"\ncurve\n    public-key = \"{PUBLIC}\"\n    secret-key = \"{SECRET}\"\n"
    );
    let cert = Certificate::parse(&text).unwrap();
    assert_eq!(cert.public.to_z85(), PUBLIC);
    assert_eq!(cert.name.as_deref(), Some("agent-7"));
    assert_eq!(cert.role, Some(Role::Publisher));
}

#[test]
fn a_malformed_certificate_is_refused_with_its_line() {
    for (text, says) in [
        ("curve\n    public-key = \"short\"\n", "line 2: a key is 40 characters"),
        (
            &format!("curve\n    public-key = {PUBLIC}\n") as &str,
            "line 2: the value of public-key is not in double quotes",
        ),
        (
            &format!("keys\n    public-key = \"{PUBLIC}\"\n"),
            "line 1: unknown section",
        ),
        (
            &format!("    public-key = \"{PUBLIC}\"\n"),
            "line 1: a key before any section",
        ),
        ("metadata\n    name = \"x\"\n", "no public-key"),
        (
            &format!("metadata\n    role = \"root\"\ncurve\n    public-key = \"{PUBLIC}\"\n"),
            "line 2: unknown role \"root\"",
        ),
        (
            &format!("curve\n    public-key = \"{}\"\n", "~".repeat(40)),
            "line 2: not Z85",
        ),
    ] {
        let e = Certificate::parse(text).unwrap_err();
        assert!(e.contains(says), "{text:?}: {e}");
    }
}

#[test]
fn roles_connect_only_where_they_belong() {
    use Endpoint::*;
    assert!(Logs.allows(Role::Publisher) && !Logs.allows(Role::Reader));
    assert!(Live.allows(Role::Reader) && !Live.allows(Role::Publisher));
    assert!(Api.allows(Role::Publisher) && Api.allows(Role::Reader));
    assert!([Logs, Live, Api].iter().all(|e| e.allows(Role::Admin)));
}

#[test]
fn a_client_needs_both_key_variables_or_neither() {
    let only = |var: &'static str| move |v: &str| (v == var).then(|| "/nonexistent".to_string());
    assert!(ClientKeys::from_lookup(&|_| None).unwrap().is_none());
    assert!(matches!(
        ClientKeys::from_lookup(&only(ENV_CURVE_SECRET_KEY)),
        Err(Error::EnvPair {
            missing: ENV_CURVE_SERVER_KEY,
            ..
        })
    ));
    assert!(matches!(
        Authorizer::from_lookup(&only(ENV_AUTHORIZED_KEYS_DIR)),
        Err(Error::EnvPair {
            missing: ENV_CURVE_SECRET_KEY,
            ..
        })
    ));
    let both = |v: &str| {
        [ENV_CURVE_SECRET_KEY, ENV_CURVE_SERVER_KEY]
            .contains(&v)
            .then(|| format!("/nonexistent/{v}"))
    };
    let e = ClientKeys::from_lookup(&both).unwrap_err().to_string();
    assert!(e.contains("named by CDKTR_CURVE_SECRET_KEY"), "{e}");
}
