//! A minimal browser for the console: signs in and keeps the session cookie.

use std::time::Duration;

use crate::Api;

/// A console page for a signed-in user: a minimal browser keeping the session cookie.
#[derive(Debug)]
pub struct Console {
    base: String,
    agent: ureq::Agent,
    cookie: String,
}

impl Console {
    /// Adds supervisor `name` through the API and signs in as them.
    pub fn sign_in(api: &Api, name: &str) -> Console {
        let password = format!("{name} passphrase 1");
        let body = serde_json::json!({"name": name, "role": "supervisor", "password": password});
        let (status, v) = api.post("/v1/users", &body.to_string());
        assert_eq!(status, 201, "{v}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut console = Console { base: api.base.clone(), agent, cookie: String::new() };
        let form = console.get("/login");
        let at = form.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        let csrf = form[at..].split('"').next().unwrap().to_owned();
        let body = format!("csrf={csrf}&name={name}&password={}", password.replace(' ', "+"));
        let r = console
            .agent
            .post(&format!("{}/login", console.base))
            .header("Cookie", &console.cookie)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(body.as_str())
            .expect("the console answers");
        assert_eq!(r.status().as_u16(), 303, "signing in");
        console.keep_cookies(&r);
        console
    }

    fn keep_cookies(&mut self, r: &ureq::http::Response<ureq::Body>) {
        let mut jar: Vec<String> =
            self.cookie.split("; ").filter(|c| !c.is_empty()).map(str::to_owned).collect();
        for c in r.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            jar.retain(|c| !c.starts_with(&format!("{name}=")));
            jar.push(pair);
        }
        self.cookie = jar.join("; ");
    }

    /// The page at `path`, which must answer 200.
    pub fn get(&mut self, path: &str) -> String {
        let mut r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .call()
            .expect("the console answers");
        self.keep_cookies(&r);
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r.body_mut().read_to_string().unwrap()
    }
}
