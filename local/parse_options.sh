#!/usr/bin/env bash
# Source this from a recipe after its variables are set:  . ../../local/parse_options.sh
#
# Every `--name value` (or `--name=value`) whose name, with dashes turned into underscores,
# is an existing shell variable of the recipe overwrites that variable; `--help` lists them.
# Unlike Kaldi's parse_options.sh there is no `--config FILE` that gets sourced as shell code:
# configuration files are TOML and are passed to sertool with `--conf`.
# What remains after the options is left in "$@" as positional arguments.

_recipe_usage() {
  echo "usage: $0 [--option value ...]" >&2
  echo "options (current values):" >&2
  local name
  for name in $_recipe_option_names; do
    printf '  --%-20s %s\n' "${name//_/-}" "${!name}" >&2
  done
}

_recipe_option_names="${option_names:-}"
_positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _recipe_usage; exit 0 ;;
    --*=*) _opt="${1%%=*}"; _val="${1#*=}"; shift ;;
    --*)
      _opt="$1"
      if [ $# -lt 2 ]; then echo "$0: option $_opt needs a value" >&2; exit 1; fi
      _val="$2"; shift 2 ;;
    *) _positional+=("$1"); shift; continue ;;
  esac
  _name="${_opt#--}"; _name="${_name//-/_}"
  if [ -z "${!_name+set}" ]; then
    echo "$0: unknown option $_opt (see --help)" >&2; exit 1
  fi
  printf -v "$_name" '%s' "$_val"
done
set -- "${_positional[@]+"${_positional[@]}"}"
unset _opt _val _name _positional
