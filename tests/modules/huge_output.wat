;; Hostile: claims a 4 MiB output.
(module
  (memory (export "memory") 64)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 4194304)))
