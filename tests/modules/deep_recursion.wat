;; Hostile: unbounded recursion (stack overflow trap).
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param $len i32) (result i32) (i32.const 1024))
  (func $down (param $n i64) (result i64)
    (i64.add (call $down (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (call $down (i64.const 0))))
