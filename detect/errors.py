"""Errors the CLI reports as one clear line: bad input from the user, never a bug of ours."""


class UserError(Exception):
    """Bad user input (a file, a spec, a config value). The message names the file and the problem."""


class DatasetError(UserError):
    """A dataset file is missing, corrupt or inconsistent."""


class ConfigError(UserError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""
