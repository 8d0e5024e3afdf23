
(function(){
  var config = {responsive: true, displaylogo: false, showLink: false};
  var done = [];
  document.querySelectorAll('script[type="application/json"][data-figure]').forEach(function(s){
    var div = document.getElementById(s.getAttribute('data-figure'));
    var spec = JSON.parse(s.textContent);
    done.push(Plotly.newPlot(div, spec.data, spec.layout, config).then(function(gd){
      if (gd.id === 'fig-tradeoff') {
        gd.on('plotly_click', function(ev){
          var i = ev.points[0].customdata;
          var el = document.getElementById('run-' + i);
          if (el) { el.scrollIntoView({behavior: 'smooth'}); }
        });
      }
      gd.setAttribute('data-rendered', '1');
      return gd;
    }));
  });
  window.detoxkitReady = Promise.all(done);
  var filter = document.getElementById('prompt-filter');
  if (filter) {
    filter.addEventListener('input', function(){
      var q = filter.value.toLowerCase();
      document.querySelectorAll('details.prompt').forEach(function(d){
        d.hidden = !!q && d.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }
  function all(open){ document.querySelectorAll('details.prompt').forEach(function(d){ d.open = open; }); }
  var e = document.getElementById('expand-all'); if (e) e.addEventListener('click', function(){ all(true); });
  var c = document.getElementById('collapse-all'); if (c) c.addEventListener('click', function(){ all(false); });
})();
