//! Enrolment: a new token for `tunnel add`, and spending it when an agent
//! proves the secret over its channel.

use std::time::Duration;

use super::token::{proof_matches, random_hex, PendingToken, Token};
use super::{now, Agent, Register, RegisterError};
use crate::config::valid_agent_name as valid_name;

impl Register {
    /// A new one-time token for an agent called `name`, valid for `ttl`,
    /// telling the agent to reach the edge at `edge` whose key has `pin`.
    pub fn add_token(
        &self,
        name: &str,
        edge: &str,
        site: &str,
        pin: &str,
        ttl: Duration,
    ) -> Result<Token, RegisterError> {
        if !valid_name(name) {
            return Err(RegisterError::BadName(name.to_string()));
        }
        let now = now();
        let _turn = self.exclusive()?;
        let mut pending: Vec<PendingToken> = self.read("tokens.json")?;
        pending.retain(|p| p.expires > now);
        let token = Token {
            edge: edge.to_string(),
            name: site.to_string(),
            pin: pin.to_string(),
            id: random_hex(8),
            secret: random_hex(32),
            expires: now + ttl.as_secs(),
        };
        pending.push(PendingToken {
            id: token.id.clone(),
            name: name.to_string(),
            secret: token.secret.clone(),
            expires: token.expires,
            spent_by: None,
        });
        self.write("tokens.json", &pending)?;
        Ok(token)
    }

    /// Spends the token `id` for the agent whose key has `pin`, if `proof`
    /// is the token's proof for the channel that exported `exported`;
    /// returns the agent's name. A token is spent by its first use, right
    /// or wrong, so a secret cannot be guessed at; the agent that spent it
    /// rightly may use it again until it expires (its first answer lost,
    /// or its config not written at home), and nobody else may.
    pub fn redeem(
        &self,
        id: &str,
        proof_given: &str,
        exported: &[u8],
        pin: &str,
    ) -> Result<String, RegisterError> {
        let _turn = self.exclusive()?;
        let mut pending: Vec<PendingToken> = self.read("tokens.json")?;
        let Some(at) = pending.iter().position(|p| p.id == id) else {
            return Err(RegisterError::Unknown);
        };
        let token = pending[at].clone();
        let right = proof_matches(&token.secret, proof_given, exported);
        let again = right && token.spent_by.as_deref() == Some(pin);
        if token.spent_by.is_some() && !again {
            return Err(RegisterError::Unknown);
        }
        if token.expires <= now() {
            pending.remove(at);
            self.write("tokens.json", &pending)?;
            return Err(RegisterError::Expired);
        }
        if !right {
            pending.remove(at);
            self.write("tokens.json", &pending)?;
            return Err(RegisterError::WrongProof);
        }
        let mut agents = self.agents()?;
        if again && agents.iter().any(|a| a.pin == pin && a.name == token.name) {
            return Ok(token.name);
        }
        agents.retain(|a| a.pin != pin);
        agents.push(Agent {
            name: token.name.clone(),
            pin: pin.to_string(),
            enrolled: now(),
        });
        // The agent first, then the token marked: a failure between the
        // two leaves an agent whose token may be used once more by it.
        self.write("agents.json", &agents)?;
        pending[at].spent_by = Some(pin.to_string());
        self.write("tokens.json", &pending)?;
        Ok(token.name)
    }

    /// Whether a token with this id is known (pending, or spent and not
    /// yet expired): the door answers an enrolment only for these.
    pub fn knows_token(&self, id: &str) -> bool {
        let pending: Vec<PendingToken> = self.read("tokens.json").unwrap_or_default();
        pending.iter().any(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::token_for;
    use super::super::{Register, RegisterError, Token};
    use std::time::Duration;

    #[test]
    fn a_token_is_spent_once_and_binds_to_its_channel() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let token = token_for(&register, "home");
        let back = Token::decode(&token.encode()).unwrap();
        assert_eq!(back, token);
        let channel = [7u8; 32];
        let other_channel = [8u8; 32];
        // A proof made for another channel does not count, and spends the token.
        assert_eq!(
            register.redeem(
                &token.id,
                &token.proof(&other_channel),
                &channel,
                "sha256/a"
            ),
            Err(RegisterError::WrongProof)
        );
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/a"),
            Err(RegisterError::Unknown)
        );
        let token = token_for(&register, "home");
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/a"),
            Ok("home".to_string())
        );
        assert_eq!(register.agents().unwrap()[0].pin, "sha256/a");
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/b"),
            Err(RegisterError::Unknown),
            "a second use"
        );
        // The agent that spent it, on a new channel (its answer was lost,
        // or its config could not be written at home): enrolled still, once.
        let retry = [9u8; 32];
        assert_eq!(
            register.redeem(&token.id, &token.proof(&retry), &retry, "sha256/a"),
            Ok("home".to_string())
        );
        assert_eq!(register.agents().unwrap().len(), 1);
        assert_eq!(
            register.redeem(&token.id, &token.proof(&other_channel), &retry, "sha256/a"),
            Err(RegisterError::Unknown),
            "a wrong proof from the same key"
        );
        assert!(!register.was_removed("sha256/a"));
        assert!(register.remove("home").unwrap());
        assert!(
            register.was_removed("sha256/a"),
            "told it was removed if it knocks"
        );
        assert!(!register.knows_token(&token.id));
        assert_eq!(
            register.redeem(&token.id, &token.proof(&retry), &retry, "sha256/a"),
            Err(RegisterError::Unknown),
            "removed: its tokens are gone too"
        );
        assert!(register.agents().unwrap().is_empty());
    }

    /// Two enrollments with one token at the same moment (its owner and a
    /// thief): one agent, not two.
    #[test]
    fn a_token_raced_for_is_still_spent_once() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let channel = [7u8; 32];
        for round in 0..20 {
            let token = token_for(&register, "home");
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let enrolled: usize = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..8)
                    .map(|i| {
                        let (register, token, start) = (&register, &token, start.clone());
                        scope.spawn(move || {
                            start.wait();
                            let pin = format!("sha256/{round}-{i}");
                            register.redeem(&token.id, &token.proof(&channel), &channel, &pin)
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|racer| racer.join().unwrap())
                    .filter(Result::is_ok)
                    .count()
            });
            assert_eq!(enrolled, 1, "round {round}");
        }
        assert_eq!(register.agents().unwrap().len(), 20);
    }

    /// `tunnel add` and `tunnel remove` (another process) while the edge
    /// spends tokens and enrols agents: a spent token never comes back, an
    /// added one is never lost, a removed agent never returns.
    #[test]
    fn the_cli_and_the_edge_writing_at_once_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let channel = [7u8; 32];
        let spendable: Vec<Token> = (0..40).map(|_| token_for(&register, "home")).collect();
        let added: Vec<Token> = std::thread::scope(|scope| {
            let edge = scope.spawn(|| {
                for (i, token) in spendable.iter().enumerate() {
                    let pin = format!("sha256/{i}");
                    let name = register.redeem(&token.id, &token.proof(&channel), &channel, &pin);
                    assert_eq!(name, Ok("home".to_string()));
                }
            });
            let cli = scope.spawn(|| {
                (0..40)
                    .map(|_| {
                        assert!(!register.remove("gone").unwrap());
                        token_for(&register, "other")
                    })
                    .collect()
            });
            edge.join().unwrap();
            cli.join().unwrap()
        });
        let pending: Vec<super::super::PendingToken> = register.read("tokens.json").unwrap();
        let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
        // Kept until they expire, for their own agent's retry, but spent.
        for token in &spendable {
            let kept = pending.iter().find(|p| p.id == token.id);
            assert!(
                kept.is_some_and(|p| p.spent_by.is_some()),
                "a spent token came back unspent"
            );
        }
        for token in &added {
            assert!(ids.contains(&token.id.as_str()), "an added token was lost");
        }
        assert_eq!(
            register.agents().unwrap().len(),
            40,
            "an enrolled agent was lost"
        );
    }

    #[test]
    fn an_expired_token_and_a_bad_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let token = register
            .add_token("home", "e:443", "e", "sha256/e", Duration::ZERO)
            .unwrap();
        let channel = [1u8; 32];
        assert_eq!(
            register.redeem(&token.id, &token.proof(&channel), &channel, "sha256/a"),
            Err(RegisterError::Expired)
        );
        assert!(matches!(
            register.add_token("Home Server", "e:443", "e", "p", Duration::from_secs(1)),
            Err(RegisterError::BadName(_))
        ));
    }
}
