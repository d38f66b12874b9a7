;; Hostile: declares 1 GiB of initial memory (16384 pages).
(module
  (memory (export "memory") 16384)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64) (i64.const 0)))
