//! Exit codes. A script tells "my job failed" (1) from "I typed it wrong" (2) from "the
//! service is down" (3) without reading any output.

use std::process::ExitCode;

/// How a command ended. The order is the severity a run of many jobs reports: the worst
/// outcome of any file wins, and an unreachable gateway outranks a failed job, since it
/// says nothing about the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: everything asked for was done.
    Ok,
    /// 1: a job failed or was cancelled, or the gateway refused a request for it.
    JobFailed,
    /// 2: the command line was wrong; nothing was sent.
    Usage,
    /// 3: the gateway could not be reached, or stayed unavailable (503/429) after retries.
    Unreachable,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::JobFailed => 1,
            Exit::Usage => 2,
            Exit::Unreachable => 3,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_outcome_wins() {
        let all = [Exit::Ok, Exit::Unreachable, Exit::JobFailed];
        assert_eq!(all.into_iter().max(), Some(Exit::Unreachable));
        assert_eq!(
            [Exit::Ok, Exit::JobFailed].into_iter().max(),
            Some(Exit::JobFailed)
        );
        let codes: Vec<u8> = [Exit::Ok, Exit::JobFailed, Exit::Usage, Exit::Unreachable]
            .into_iter()
            .map(Exit::code)
            .collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
