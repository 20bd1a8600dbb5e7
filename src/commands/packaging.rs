//! `pcsaga completions` and `pcsaga man`: what a packaged daemon ships beside its binary,
//! generated from the command line itself so they can never disagree with `--help`.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, Shell};
use crate::exit::{Exit, Failed};

pub fn completions(shell: Shell) -> Result<Exit, Failed> {
    let mut command = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "pcsaga", &mut out);
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            Failed::new(
                Exit::Failure,
                anyhow::anyhow!("cannot write the completion script: {e}"),
            )
        })?;
    Ok(Exit::Ok)
}

/// Every man page of the command line: `pcsaga.1`, then `pcsaga-VERB.1` per verb and
/// `pcsaga-VERB-SUB.1` per sub-verb, as (file name, roff text).
pub fn pages() -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
    let mut command = Cli::command();
    // Built, the verbs carry the global options (--db, --config, ...) and the version.
    command.build();
    let mut pages = Vec::new();
    collect(&command, "pcsaga", &mut pages)?;
    Ok(pages)
}

fn collect(
    command: &clap::Command,
    name: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), std::io::Error> {
    // The page's title names the verb as a reader types it, `pcsaga-daemon`.
    let titled = command.clone().name(name.to_owned());
    let mut text = Vec::new();
    clap_mangen::Man::new(titled.clone())
        .date("")
        .render(&mut text)?;
    pages.push((format!("{name}.1"), text));
    for sub in titled
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        collect(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

pub fn man(out_dir: &Path) -> Result<Exit, Failed> {
    let fail = |what: String| Failed::new(Exit::Failure, anyhow::anyhow!(what));
    let pages = pages().map_err(|e| fail(format!("cannot render the man pages: {e}")))?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", out_dir.display())))?;
    for (name, text) in &pages {
        let path = out_dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    }
    say!(
        "wrote {} man pages into {}; read one with `man -l {}`",
        pages.len(),
        out_dir.display(),
        out_dir.join("pcsaga.1").display()
    );
    Ok(Exit::Ok)
}
